"""``make bench``: the gateway measured side by side with its baselines and a peer.

Rows: the simulated provider called directly, Envoy as a plain pass-through, the gateway
(OpenAI-format provider and Anthropic translation, non-streamed and streamed) and LiteLLM's
proxy, all in front of the same simulator, loaded by the same clients. See README.md.
"""
