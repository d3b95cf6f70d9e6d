"""Text-only instruction data (ShareGPT-style JSON / JSON Lines), and the conversation reading
that the LLaVA loader shares."""

from __future__ import annotations

from typing import Any

from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.sources._common import (
    FILE,
    SAMPLING,
    AnnotationSource,
    Entry,
    Issues,
    read_items,
    schema,
)
from vlitc.records import IMAGE_TOKEN

USER_ROLES = frozenset({"human", "user", "prompter"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "chatgpt", "bing", "bard", "model"})
SYSTEM_ROLES = frozenset({"system"})


def strip_placeholder(text: str) -> tuple[str, int]:
    """Text without ``<image>`` placeholders (and the newline beside each), and how many."""
    n = text.count(IMAGE_TOKEN)
    if n:
        text = text.replace(IMAGE_TOKEN + "\n", "").replace("\n" + IMAGE_TOKEN, "")
        text = text.replace(IMAGE_TOKEN, "")
    return text.strip(), n


def read_turns(raw: Any, issues: Issues, where: Any) -> tuple[list[dict], str | None, int]:
    """ShareGPT ``{"from", "value"}`` or chat ``{"role", "content"}`` turns as record turns.

    Returns ``(turns, system prompt, placeholders seen)``. A conversation that does not alternate
    user/assistant starting with the user is counted (``bad_conversation``) and comes back empty;
    a trailing user turn is dropped (``trailing_user_turn``).
    """
    if not isinstance(raw, list):
        issues.add("bad_conversation", {"item": where, "why": "no list of turns"})
        return [], None, 0
    turns: list[dict] = []
    system, placeholders = None, 0
    for t in raw:
        role = str(t.get("from", t.get("role", ""))).lower() if isinstance(t, dict) else ""
        value = t.get("value", t.get("content")) if isinstance(t, dict) else None
        if not isinstance(value, str):
            issues.add("bad_conversation", {"item": where, "why": "turn without text"})
            return [], None, 0
        text, n = strip_placeholder(value)
        placeholders += n
        if role in SYSTEM_ROLES and not turns:
            system = text
            continue
        want = "user" if len(turns) % 2 == 0 else "assistant"
        got = "user" if role in USER_ROLES else "assistant" if role in ASSISTANT_ROLES else role
        if got != want:
            issues.add("bad_conversation", {"item": where, "why": f"turn {len(turns)} is {role!r}"})
            return [], None, 0
        turns.append({"role": got, "content": text})
    if turns and turns[-1]["role"] == "user":
        issues.add("trailing_user_turn", where)
        turns.pop()
    return turns, system, placeholders


def unique_ids(ids: list[str], issues: Issues) -> list[str]:
    """Make repeated ids unique (``id#2``, ``id#3``...), counting ``duplicate_id``."""
    seen: dict[str, int] = {}
    out = []
    for rid in ids:
        n = seen.get(rid, 0) + 1
        seen[rid] = n
        if n > 1:
            issues.add("duplicate_id", rid)
            rid = f"{rid}#{n}"
        out.append(rid)
    return out


@register("source", "sharegpt")
class ShareGptSource(AnnotationSource):
    """Load text-only instruction data in ShareGPT style (``conversations`` of from/value turns,
    or chat ``messages`` of role/content turns), JSON or JSON Lines; records have no image.
    """

    version = 1
    file_params = ("file",)
    writes = ("id", "conversations")
    image_folder_param = None  # text-only: records have no image
    params_schema = schema(
        {
            "file": FILE | {"description": "JSON array or JSON Lines of conversations"},
            **SAMPLING,
        },
        required=("file",),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        path = self.path(ctx, "file")
        items = read_items(path)
        ids = [str(it.get("id", i)) if isinstance(it, dict) else str(i)
               for i, (_, it) in enumerate(items)]
        return [Entry(rid, None, None, None, (f"{path.name}:{line or i}", it))
                for i, (rid, (line, it)) in enumerate(zip(unique_ids(ids, issues), items, strict=True))]

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        where, item = data
        raw = item.get("conversations", item.get("messages")) if isinstance(item, dict) else None
        turns, system, placeholders = read_turns(raw, issues, where)
        if placeholders:
            issues.add("placeholder_in_text_only", where)
        meta = {"system": system} if system else {}
        return {"conversations": turns, "meta": meta}
