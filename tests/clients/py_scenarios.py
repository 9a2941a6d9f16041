"""The client-compatibility cases, written as each Python library's own docs write them.

Run by tests/clients/test_clients.py in the clients' environment (.venv/clients, see
requirements.txt), one process per library:

    python py_scenarios.py LIBRARY BASE_URL KEY MODEL...

It prints one JSON object: {model: {case: null (passed) or "the error"}}. Each case
asserts what a user of the library relies on; an exception is the case's failure.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import traceback
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

from pydantic import BaseModel

PROMPT = "Say hello."
WEATHER_PROMPT = "What is the weather in Paris?"


class Person(BaseModel):
    name: str
    age: int


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def get_weather(location: str) -> str:
    """Current weather for a city."""
    return f"sunny in {location}"


Case = Callable[[str, str, str], None]


# ------------------------------------------------------------------ openai-python (sync)
def _openai(base: str, key: str) -> Any:
    import openai

    return openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)


def openai_chat(base: str, key: str, model: str) -> None:
    reply = _openai(base, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}]
    )
    assert reply.choices[0].message.content, reply


def openai_tutorial_loop(base: str, key: str, model: str) -> None:
    """OpenAI's streaming quickstart, verbatim: every chunk has a choices[0]."""
    stream = _openai(base, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    out = io.StringIO()
    with redirect_stdout(out):
        for chunk in stream:
            print(chunk.choices[0].delta.content or "", end="")
    assert out.getvalue(), "no text streamed"


def openai_usage_after_loop(base: str, key: str, model: str) -> None:
    """OpenAI's documented include_usage pattern: the last chunk carries the usage."""
    stream = _openai(base, key).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunk = list(stream)[-1]
    assert chunk.usage is not None, f"last chunk has no usage: {chunk}"
    assert chunk.usage.completion_tokens > 0


def openai_structured(base: str, key: str, model: str) -> None:
    parsed = (
        _openai(base, key)
        .chat.completions.parse(
            model=model, messages=[{"role": "user", "content": "Invent a person."}], response_format=Person
        )
        .choices[0]
        .message.parsed
    )
    assert isinstance(parsed, Person), parsed


def openai_tools(base: str, key: str, model: str) -> None:
    client = _openai(base, key)
    messages: list[Any] = [{"role": "user", "content": WEATHER_PROMPT}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    calls = first.choices[0].message.tool_calls
    assert calls and first.choices[0].finish_reason == "tool_calls", first
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    for call in calls:
        args = json.loads(call.function.arguments)
        messages.append({"role": "tool", "tool_call_id": call.id, "content": get_weather(**args)})
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert "sunny" in (second.choices[0].message.content or ""), second


# ------------------------------------------------------------------ openai-python (async)
def _async_openai(base: str, key: str) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)


def async_chat(base: str, key: str, model: str) -> None:
    async def run() -> None:
        async with _async_openai(base, key) as client:
            reply = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPT}]
            )
            assert reply.choices[0].message.content, reply

    asyncio.run(run())


def async_tutorial_loop(base: str, key: str, model: str) -> None:
    async def run() -> None:
        async with _async_openai(base, key) as client:
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPT}], stream=True
            )
            text = ""
            async for chunk in stream:
                text += chunk.choices[0].delta.content or ""
            assert text

    asyncio.run(run())


def async_usage_after_loop(base: str, key: str, model: str) -> None:
    async def run() -> None:
        async with _async_openai(base, key) as client:
            stream = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPT}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunk = [c async for c in stream][-1]
            assert chunk.usage is not None, f"last chunk has no usage: {chunk}"

    asyncio.run(run())


def async_structured(base: str, key: str, model: str) -> None:
    async def run() -> None:
        async with _async_openai(base, key) as client:
            reply = await client.chat.completions.parse(
                model=model,
                messages=[{"role": "user", "content": "Invent a person."}],
                response_format=Person,
            )
            assert isinstance(reply.choices[0].message.parsed, Person)

    asyncio.run(run())


def async_tools(base: str, key: str, model: str) -> None:
    async def run() -> None:
        async with _async_openai(base, key) as client:
            messages: list[Any] = [{"role": "user", "content": WEATHER_PROMPT}]
            first = await client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
            calls = first.choices[0].message.tool_calls
            assert calls, first
            messages.append(first.choices[0].message.model_dump(exclude_none=True))
            for call in calls:
                args = json.loads(call.function.arguments)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": get_weather(**args)})
            second = await client.chat.completions.create(
                model=model, messages=messages, tools=[WEATHER_TOOL]
            )
            assert "sunny" in (second.choices[0].message.content or "")

    asyncio.run(run())


# ------------------------------------------------------------------ LangChain
def _langchain(base: str, key: str, model: str, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=model, base_url=base, api_key=key, max_retries=0, timeout=30, **kwargs)


def langchain_chat(base: str, key: str, model: str) -> None:
    assert _langchain(base, key, model).invoke(PROMPT).content


def langchain_stream(base: str, key: str, model: str) -> None:
    text = "".join(str(chunk.content) for chunk in _langchain(base, key, model).stream(PROMPT))
    assert text


def langchain_stream_usage(base: str, key: str, model: str) -> None:
    total = None
    for chunk in _langchain(base, key, model, stream_usage=True).stream(PROMPT):
        total = chunk if total is None else total + chunk
    assert total is not None and total.usage_metadata, f"no usage_metadata: {total}"
    assert total.usage_metadata["output_tokens"] > 0


def langchain_structured(base: str, key: str, model: str) -> None:
    person = _langchain(base, key, model).with_structured_output(Person).invoke("Invent a person.")
    assert isinstance(person, Person), person


def langchain_tools(base: str, key: str, model: str) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    weather = tool(get_weather)
    llm = _langchain(base, key, model).bind_tools([weather])
    messages: list[Any] = [HumanMessage(WEATHER_PROMPT)]
    first = llm.invoke(messages)
    assert first.tool_calls, first
    messages.append(first)
    for call in first.tool_calls:
        messages.append(ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"]))
    assert "sunny" in str(llm.invoke(messages).content)


# ------------------------------------------------------------------ instructor
def _instructor(base: str, key: str) -> Any:
    import instructor

    return instructor.from_openai(_openai(base, key))


def instructor_chat(base: str, key: str, model: str) -> None:
    reply = _instructor(base, key).chat.completions.create(
        model=model, response_model=None, messages=[{"role": "user", "content": PROMPT}]
    )
    assert reply.choices[0].message.content


def instructor_stream(base: str, key: str, model: str) -> None:
    """Partial objects as they stream in (instructor's streaming)."""
    partials = list(
        _instructor(base, key).chat.completions.create_partial(
            model=model, response_model=Person, messages=[{"role": "user", "content": "Invent a person."}]
        )
    )
    assert partials and partials[-1].name, partials


def instructor_structured(base: str, key: str, model: str) -> None:
    person = _instructor(base, key).chat.completions.create(
        model=model, response_model=Person, messages=[{"role": "user", "content": "Invent a person."}]
    )
    assert isinstance(person, Person)


def instructor_json_mode(base: str, key: str, model: str) -> None:
    import instructor

    client = instructor.from_openai(_openai(base, key), mode=instructor.Mode.JSON_SCHEMA)
    person = client.chat.completions.create(
        model=model, response_model=Person, messages=[{"role": "user", "content": "Invent a person."}]
    )
    assert isinstance(person, Person)


# ------------------------------------------------------------------ pydantic-ai
def _agent(base: str, key: str, model: str, **kwargs: Any) -> Any:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    llm = OpenAIChatModel(model, provider=OpenAIProvider(base_url=base, api_key=key))
    return Agent(llm, **kwargs)


def pydantic_ai_chat(base: str, key: str, model: str) -> None:
    assert _agent(base, key, model).run_sync(PROMPT).output


def pydantic_ai_stream(base: str, key: str, model: str) -> None:
    async def run() -> None:
        async with _agent(base, key, model).run_stream(PROMPT) as result:
            pieces = [text async for text in result.stream_text(delta=True)]
            assert "".join(pieces)
            assert result.usage.output_tokens > 0, result.usage

    asyncio.run(run())


def pydantic_ai_structured(base: str, key: str, model: str) -> None:
    assert isinstance(
        _agent(base, key, model, output_type=Person).run_sync("Invent a person.").output, Person
    )


def pydantic_ai_tools(base: str, key: str, model: str) -> None:
    agent = _agent(base, key, model)
    agent.tool_plain(get_weather)
    result = agent.run_sync(WEATHER_PROMPT)
    assert "sunny" in result.output, result.all_messages()


# ------------------------------------------------------------------ LiteLLM SDK
def _litellm(model: str, base: str, key: str, **kwargs: Any) -> Any:
    import litellm

    return litellm.completion(model="openai/" + model, api_base=base, api_key=key, num_retries=0, **kwargs)


def litellm_chat(base: str, key: str, model: str) -> None:
    reply = _litellm(model, base, key, messages=[{"role": "user", "content": PROMPT}])
    assert reply.choices[0].message.content


def litellm_stream(base: str, key: str, model: str) -> None:
    stream = _litellm(model, base, key, messages=[{"role": "user", "content": PROMPT}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text


def litellm_stream_usage(base: str, key: str, model: str) -> None:
    stream = _litellm(
        model,
        base,
        key,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in stream:
        usage = getattr(chunk, "usage", None) or usage
    assert usage is not None and usage.completion_tokens > 0, usage


def litellm_structured(base: str, key: str, model: str) -> None:
    reply = _litellm(
        model, base, key, messages=[{"role": "user", "content": "Invent a person."}], response_format=Person
    )
    Person.model_validate_json(reply.choices[0].message.content)


def litellm_tools(base: str, key: str, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": WEATHER_PROMPT}]
    first = _litellm(model, base, key, messages=messages, tools=[WEATHER_TOOL])
    calls = first.choices[0].message.tool_calls
    assert calls, first
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    for call in calls:
        args = json.loads(call.function.arguments)
        messages.append({"role": "tool", "tool_call_id": call.id, "content": get_weather(**args)})
    second = _litellm(model, base, key, messages=messages, tools=[WEATHER_TOOL])
    assert "sunny" in (second.choices[0].message.content or "")


# ------------------------------------------------------------------ LlamaIndex
def _llama(base: str, key: str, model: str) -> Any:
    # OpenAILike: LlamaIndex's OpenAI class refuses model names it does not know.
    from llama_index.llms.openai_like import OpenAILike

    return OpenAILike(
        model=model,
        api_base=base,
        api_key=key,
        is_chat_model=True,
        is_function_calling_model=True,
        context_window=128000,
        max_retries=0,
        timeout=30,
    )


def llama_chat(base: str, key: str, model: str) -> None:
    from llama_index.core.llms import ChatMessage

    assert _llama(base, key, model).chat([ChatMessage(role="user", content=PROMPT)]).message.content


def llama_stream(base: str, key: str, model: str) -> None:
    from llama_index.core.llms import ChatMessage

    text = "".join(
        r.delta or ""
        for r in _llama(base, key, model).stream_chat([ChatMessage(role="user", content=PROMPT)])
    )
    assert text


def llama_structured(base: str, key: str, model: str) -> None:
    from llama_index.core.prompts import PromptTemplate

    person = _llama(base, key, model).structured_predict(Person, PromptTemplate("Invent a person."))
    assert isinstance(person, Person), person


def llama_tools(base: str, key: str, model: str) -> None:
    from llama_index.core.tools import FunctionTool

    llm = _llama(base, key, model)
    weather = FunctionTool.from_defaults(fn=get_weather)
    response = llm.chat_with_tools([weather], user_msg=WEATHER_PROMPT)
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert calls and calls[0].tool_name == "get_weather"
    output = weather(**calls[0].tool_kwargs)
    assert "sunny" in str(output)


LIBRARIES: dict[str, dict[str, Case]] = {
    "openai-python": {
        "chat": openai_chat,
        "stream_tutorial_loop": openai_tutorial_loop,
        "stream_usage_after_loop": openai_usage_after_loop,
        "structured": openai_structured,
        "tools": openai_tools,
    },
    "openai-python-async": {
        "chat": async_chat,
        "stream_tutorial_loop": async_tutorial_loop,
        "stream_usage_after_loop": async_usage_after_loop,
        "structured": async_structured,
        "tools": async_tools,
    },
    "langchain": {
        "chat": langchain_chat,
        "stream": langchain_stream,
        "stream_usage": langchain_stream_usage,
        "structured": langchain_structured,
        "tools": langchain_tools,
    },
    "instructor": {
        "chat": instructor_chat,
        "stream": instructor_stream,
        "structured": instructor_structured,
        "structured_json_schema": instructor_json_mode,
    },
    "pydantic-ai": {
        "chat": pydantic_ai_chat,
        "stream": pydantic_ai_stream,
        "structured": pydantic_ai_structured,
        "tools": pydantic_ai_tools,
    },
    "litellm": {
        "chat": litellm_chat,
        "stream": litellm_stream,
        "stream_usage": litellm_stream_usage,
        "structured": litellm_structured,
        "tools": litellm_tools,
    },
    "llamaindex": {
        "chat": llama_chat,
        "stream": llama_stream,
        "structured": llama_structured,
        "tools": llama_tools,
    },
}


def main() -> None:
    library, base, key, *models = sys.argv[1:]
    results: dict[str, dict[str, str | None]] = {}
    for model in models:
        results[model] = {}
        for name, case in LIBRARIES[library].items():
            try:
                case(base, key, model)
                results[model][name] = None
            except BaseException:  # the case's failure, reported, never the runner's
                results[model][name] = traceback.format_exc(limit=4)[-3000:]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
