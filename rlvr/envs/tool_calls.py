"""How tools are offered to a model and how its calls are read: two formats.

A tool is a plain Python function with type hints and a docstring whose ``Args:``
section describes each argument; its JSON schema is what transformers builds from
them (`schema`), so a tool that lacks either is refused when the environment is made.

- **The chat template's format**, where the tokenizer's template renders ``tools``
  (Qwen, Hermes, SmolLM3, Llama 3.1 ...): the prompt is
  ``tok.apply_chat_template(messages, tools=[fn, ...])``; the model calls a tool with
  ``<tool_call>{"name": "calculator", "arguments": {"expression": "12*7"}}</tool_call>``
  and each result comes back as a ``role: tool`` message through the template, appended
  as the token ids of the template's delta (rlvr/rollout.py `observation_ids`).
- **The tag format**, for a tokenizer whose template has no tools (the tiny model's
  character tokenizer, SmolLM2's): the prompt lists each tool as
  ``name(arg: type) -> type: description``; the model writes ``<tool>calculator: 12*7</tool>``
  and reads ``<result>84</result>`` (a user message, or plain text without a template).

An episode reads a call in either format (`parse_call`) and answers in the format of
the call (`result_message`). Text the model writes that opens a result itself
(``<result>``, ``<tool_response>``) forges one (`FORGED`).

    ids = offer_ids(tok, [{"role": "user", "content": "12*7?"}], ["calculator"])

Run its tests: ``.venv/bin/python -m pytest tests/test_tools.py -q``.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

TOOLS: dict[str, Callable[..., Any]] = {}  # every tool an environment may offer, by name (`register_tool`)
STOPS = ("</tool>", "</tool_call>")  # a call's closing tag ends the model's turn
FORGED = ("<result>", "<tool_response>")  # only the environment opens a tool's result
TAG_CALL = re.compile(r"<tool>\s*([A-Za-z_]\w*)\s*:(.*)</tool>\s*$", re.S)
JSON_CALL = re.compile(r"<tool_call>(.*)</tool_call>\s*$", re.S)


def schema(tool: Callable[..., Any]) -> dict[str, Any]:
    """The tool's JSON schema (transformers' `get_json_schema`: type hints, docstring, an
    ``Args:`` line per argument); a ValueError in one line where it cannot be built."""
    from transformers.utils import get_json_schema

    name = getattr(tool, "__name__", repr(tool))
    try:
        out = get_json_schema(tool)
    except Exception as e:  # transformers' parsing exceptions: what is missing, in words
        raise ValueError(f"tool {name!r} needs type hints and a docstring with an Args: line per argument "
                         f"({' '.join(str(e).split())})") from None
    if not out["function"]["parameters"].get("properties"):
        raise ValueError(f"tool {name!r} takes no argument; a tool takes at least one")
    return out


def register_tool(tool: Callable[..., Any]) -> Callable[..., Any]:
    """Add a tool to `TOOLS` under its function name (checked first); usable as a decorator."""
    schema(tool)
    TOOLS[tool.__name__] = tool
    return tool


def describe(tool: Callable[..., Any]) -> str:
    """The tag format's line for a tool: ``name(arg: type, ...) -> type: description``."""
    fn = schema(tool)["function"]
    returns = fn.get("return", {}).get("type")
    args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in fn["parameters"]["properties"].items())
    return f"{fn['name']}({args}){f' -> {returns}' if returns else ''}: {' '.join(fn['description'].split())}"


def tag_call(name: str, argument: str) -> str:
    """A call in the tag format, as a model writes it (a few-shot example, a corpus document)."""
    return f"<tool>{name}: {argument}</tool>"


OFFERS = ("full", "brief")  # how the tag format states the tools (`tag_instructions`)


def tag_instructions(names: list[str] | tuple[str, ...], offer: str = "full") -> str:
    """The tag format, and the tools, as the prompt states them: in full (the format, the
    result's tags, each tool's signature and description: ~300 characters for the
    calculator), or brief (the tools' names and the call's form, one line: for a small
    model that learned the format in pretraining, whose attention a long offer dilutes)."""
    if offer == "brief":
        return f"Tools: {', '.join(names)}. Call: <tool>NAME: INPUT</tool>"
    return ("You may use tools. To call one, write <tool>NAME: INPUT</tool> and stop; its output comes back as "
            "<result>OUTPUT</result>. Tools:\n" + "\n".join(f"- {describe(TOOLS[n])}" for n in names))


def tag_messages(messages: list[dict[str, str]], names: list[str] | tuple[str, ...],
                 offer: str = "full") -> list[dict[str, str]]:
    """The messages with the tools `names` offered in the tag format, before the first user
    message's content: the first observation of a tools episode for a model without a tool
    template (`offer_ids`), and what an endpoint is sent (rlvr/chat_rollout.py).

    The offer opens the conversation, as chat templates with tools put it (in the system
    turn): few-shot examples after it read as the question does, and the question sits
    next to the model's turn, which copies its operands into a call. After the question,
    the offer put ~300 characters between them, and the tiny model could not copy across
    them (EXPERIMENTS.md, the tools experiment)."""
    messages = [dict(m) for m in messages]
    first = next((m for m in messages if m["role"] == "user"), messages[-1])
    first["content"] = f"{tag_instructions(names, offer)}\n\n{first['content']}"
    return messages


_RENDERS_TOOLS: dict[str, bool] = {}


def template_offers_tools(tok) -> bool:
    """Whether the tokenizer's chat template writes the tools it is given into the prompt."""
    template = getattr(tok, "chat_template", None)
    if not isinstance(template, str):
        return False
    if template not in _RENDERS_TOOLS:
        probe = [{"role": "user", "content": "?"}]
        plain = tok.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        offered = tok.apply_chat_template(probe, tools=[_probe_tool], tokenize=False, add_generation_prompt=True)
        _RENDERS_TOOLS[template] = plain != offered
    return _RENDERS_TOOLS[template]


def _probe_tool(x: str) -> str:
    """Probes whether a chat template renders tools.

    Args:
        x: anything
    """
    return x


def offer_ids(tok, messages: list[dict[str, str]], names: list[str] | tuple[str, ...], offer: str = "full") -> list[int]:
    """The prompt's token ids, ready for the assistant's turn, with the tools `names` offered:
    in the chat template's tool format where it has one, else listed in the tag format
    before the first user message's content (or before the plain prompt, without a template),
    in full or brief (`tag_instructions`)."""
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}; registered: {sorted(TOOLS)}")
    if template_offers_tools(tok):
        text = tok.apply_chat_template(messages, tools=[TOOLS[n] for n in names], add_generation_prompt=True,
                                       tokenize=False)
        return tok(text, add_special_tokens=False)["input_ids"]
    if getattr(tok, "chat_template", None) is None:  # the plain prompt: its last message
        return tok(tag_messages(messages[-1:], names, offer)[0]["content"], add_special_tokens=False)["input_ids"]
    messages = tag_messages(messages, names, offer)
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


@dataclass
class Call:
    """A tool call read from a model turn: the tool's name, its arguments (keyword
    arguments, or the tag format's one text), the format it came in, and why it could
    not be read (`error`, None when it could)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    format: str = "tags"  # "tags" | "json"
    error: str | None = None


def parse_call(text: str) -> Call | None:
    """The tool call that ends a model turn, in either format, or None (the turn calls nothing)."""
    found = JSON_CALL.search(text)
    if found is not None:
        try:
            body = json.loads(found.group(1))
        except ValueError as e:
            return Call("", format="json", error=f"the tool call is not JSON ({e})")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return Call("", format="json", error='a tool call is {"name": ..., "arguments": {...}}')
        arguments = body.get("arguments", {})
        if isinstance(arguments, str):  # some templates' models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass
        if not isinstance(arguments, dict):
            return Call(body["name"], format="json", error="the tool call's arguments are not an object")
        return Call(body["name"], arguments, "json")
    found = TAG_CALL.search(text)
    if found is None:
        return None
    return Call(found.group(1), textwrap.dedent(found.group(2)).strip(), "tags")  # "python: print(1)" runs print(1)


def bind(tool: Callable[..., Any], call: Call) -> dict[str, Any]:
    """The call's arguments as the tool's keyword arguments; a ValueError naming what does not fit."""
    params = list(schema(tool)["function"]["parameters"]["properties"])
    if isinstance(call.arguments, str):  # the tag format: the text is the tool's one argument
        if len(params) != 1:
            raise ValueError(f"{call.name} takes {len(params)} arguments ({', '.join(params)}): write them as a JSON "
                             "object")
        return {params[0]: call.arguments}
    unknown = sorted(set(call.arguments) - set(params))
    missing = [p for p in schema(tool)["function"]["parameters"].get("required", []) if p not in call.arguments]
    if unknown or missing:
        raise ValueError(f"{call.name} takes ({', '.join(params)}); got {sorted(call.arguments)}")
    return dict(call.arguments)


def result_message(output: str, call_format: str) -> tuple[str, str]:
    """(observation text, its chat role) of a tool's output, in the format of the call."""
    if call_format == "json":
        return output, "tool"
    return f"<result>{output}</result>", "user"
