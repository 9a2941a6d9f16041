// The client-compatibility cases for the Node libraries, written as their own docs write them.
//
// Run by tests/clients/test_clients.py, one process per library:
//     node node_scenarios.mjs LIBRARY BASE_URL KEY MODEL...
// It prints one JSON object: {model: {case: null (passed) or "the error"}}.

import OpenAI from "openai";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText, Output, tool, stepCountIs } from "ai";
import { z } from "zod";

const PROMPT = "Say hello.";
const WEATHER_PROMPT = "What is the weather in Paris?";
const PERSON_SCHEMA = {
  type: "object",
  properties: { name: { type: "string" }, age: { type: "integer" } },
  required: ["name", "age"],
  additionalProperties: false,
};
const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather for a city",
    parameters: {
      type: "object",
      properties: { location: { type: "string" } },
      required: ["location"],
    },
  },
};
const getWeather = ({ location }) => `sunny in ${location}`;

function check(condition, what) {
  if (!condition) throw new Error(what);
}

// ------------------------------------------------------------------ openai-node
const sdk = (base, key) => new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0, timeout: 30000 });

const openaiNode = {
  async chat(base, key, model) {
    const reply = await sdk(base, key).chat.completions.create({
      model,
      messages: [{ role: "user", content: PROMPT }],
    });
    check(reply.choices[0].message.content, "no content");
  },
  // OpenAI's streaming quickstart, verbatim: every chunk has a choices[0].
  async stream_tutorial_loop(base, key, model) {
    const stream = await sdk(base, key).chat.completions.create({
      model,
      messages: [{ role: "user", content: PROMPT }],
      stream: true,
    });
    let text = "";
    for await (const chunk of stream) {
      text += chunk.choices[0].delta.content || "";
    }
    check(text, "no text streamed");
  },
  async stream_usage_after_loop(base, key, model) {
    const stream = await sdk(base, key).chat.completions.create({
      model,
      messages: [{ role: "user", content: PROMPT }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let last;
    for await (const chunk of stream) last = chunk;
    check(last && last.usage && last.usage.completion_tokens > 0, `last chunk has no usage: ${JSON.stringify(last)}`);
  },
  async structured(base, key, model) {
    const reply = await sdk(base, key).chat.completions.create({
      model,
      messages: [{ role: "user", content: "Invent a person." }],
      response_format: { type: "json_schema", json_schema: { name: "person", schema: PERSON_SCHEMA, strict: true } },
    });
    const person = JSON.parse(reply.choices[0].message.content);
    check(typeof person.name === "string" && Number.isInteger(person.age), `not a person: ${JSON.stringify(person)}`);
  },
  async tools(base, key, model) {
    const client = sdk(base, key);
    const messages = [{ role: "user", content: WEATHER_PROMPT }];
    const first = await client.chat.completions.create({ model, messages, tools: [WEATHER_TOOL] });
    const calls = first.choices[0].message.tool_calls;
    check(calls && calls.length, "no tool call");
    messages.push(first.choices[0].message);
    for (const call of calls) {
      messages.push({ role: "tool", tool_call_id: call.id, content: getWeather(JSON.parse(call.function.arguments)) });
    }
    const second = await client.chat.completions.create({ model, messages, tools: [WEATHER_TOOL] });
    check((second.choices[0].message.content || "").includes("sunny"), "the tool result was not used");
  },
};

// ------------------------------------------------------------------ Vercel AI SDK
// .chat(): the Chat Completions API, which every OpenAI-compatible server has.
const aiModel = (base, key, model) => createOpenAI({ baseURL: base, apiKey: key }).chat(model);

const vercelAi = {
  async chat(base, key, model) {
    const { text } = await generateText({ model: aiModel(base, key, model), prompt: PROMPT, maxRetries: 0 });
    check(text, "no text");
  },
  async stream_usage(base, key, model) {
    const result = streamText({ model: aiModel(base, key, model), prompt: PROMPT, maxRetries: 0 });
    let text = "";
    for await (const piece of result.textStream) text += piece;
    check(text, "no text streamed");
    const usage = await result.usage;
    check(usage.outputTokens > 0, `no usage: ${JSON.stringify(usage)}`);
  },
  async structured(base, key, model) {
    const { output } = await generateText({
      model: aiModel(base, key, model),
      prompt: "Invent a person.",
      output: Output.object({ schema: z.object({ name: z.string(), age: z.number().int() }) }),
      maxRetries: 0,
    });
    check(typeof output.name === "string", `not a person: ${JSON.stringify(output)}`);
  },
  async tools(base, key, model) {
    const { text } = await generateText({
      model: aiModel(base, key, model),
      prompt: WEATHER_PROMPT,
      tools: {
        get_weather: tool({
          description: "Current weather for a city",
          inputSchema: z.object({ location: z.string() }),
          execute: async (input) => getWeather(input),
        }),
      },
      stopWhen: stepCountIs(3),
      maxRetries: 0,
    });
    check(text.includes("sunny"), `the tool result was not used: ${text}`);
  },
};

const LIBRARIES = { "openai-node": openaiNode, "vercel-ai": vercelAi };

const [library, base, key, ...models] = process.argv.slice(2);
const results = {};
for (const model of models) {
  results[model] = {};
  for (const [name, run] of Object.entries(LIBRARIES[library])) {
    try {
      await run(base, key, model);
      results[model][name] = null;
    } catch (err) {
      results[model][name] = String((err && err.stack) || err).slice(0, 3000);
    }
  }
}
console.log(JSON.stringify(results));
