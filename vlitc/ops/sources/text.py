"""Existing instruction data in ShareGPT / chat-messages style (with or without images), and the
conversation reading that the LLaVA loader shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.sources._common import (
    FILE,
    IMAGES,
    SAMPLING,
    AnnotationSource,
    Entry,
    Issues,
    coco_id,
    iter_items,
    read_items,
    schema,
)
from vlitc.ops.sources.vqa import group
from vlitc.records import IMAGE_TOKEN

USER_ROLES = frozenset({"human", "user", "prompter"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "chatgpt", "bing", "bard", "model"})
SYSTEM_ROLES = frozenset({"system"})
ID_PARAM = {"enum": ["item", "image"], "default": "item",
            "description": "record id: the item's id, or the image's (COCO id when the file name "
                           "has one) to join with annotation sources"}


LEADING = IMAGE_TOKEN + "\n"


def strip_placeholder(text: str) -> tuple[str, int]:
    """Text without ``<image>`` placeholders (and the newline beside each), and how many."""
    n = text.count(IMAGE_TOKEN)
    if n == 1 and text.startswith(LEADING):  # the usual place
        return text[len(LEADING):].strip(), 1
    if n:
        text = text.replace(IMAGE_TOKEN + "\n", "").replace("\n" + IMAGE_TOKEN, "")
        text = text.replace(IMAGE_TOKEN, "")
    return text.strip(), n


def read_turns(raw: Any, issues: Issues, where: Any,
               keep_placeholders: bool = False) -> tuple[list[dict], str | None, int]:
    """ShareGPT ``{"from", "value"}`` or chat ``{"role", "content"}`` turns as record turns.

    Returns ``(turns, system prompt, placeholders seen)``. Placeholders are removed (a sample
    puts its own back at the start) unless ``keep_placeholders`` (several images, whose
    placeholders the data places). A conversation that does not alternate user/assistant
    starting with the user is counted (``bad_conversation``) and comes back empty; a trailing
    user turn is dropped (``trailing_user_turn``).
    """
    if not isinstance(raw, list):
        issues.add("bad_conversation", {"item": where, "why": "no list of turns"})
        return [], None, 0
    turns: list[dict] = []
    system, placeholders = None, 0
    for t in raw:
        if type(t) is dict:
            role = t["from"] if "from" in t else t.get("role", "")
            value = t["value"] if "value" in t else t.get("content")
        else:
            role, value = "", None
        if type(value) is not str:
            issues.add("bad_conversation", {"item": where, "why": "turn without text"})
            return [], None, 0
        if IMAGE_TOKEN not in value:
            text, n = value.strip(), 0
        elif keep_placeholders:
            text, n = value.strip(), value.count(IMAGE_TOKEN)
        else:
            text, n = strip_placeholder(value)
        placeholders += n
        got = _ROLE.get(role) if type(role) is str else None
        if got is None:
            role = str(role).lower()
            got = _ROLE.get(role, role)
        if got == "system" and not turns:
            system = text
            continue
        if got != ("assistant" if len(turns) % 2 else "user"):
            issues.add("bad_conversation", {"item": where, "why": f"turn {len(turns)} is {role!r}"})
            return [], None, 0
        turns.append({"role": got, "content": text})
    if turns and turns[-1]["role"] == "user":
        issues.add("trailing_user_turn", where)
        turns.pop()
    return turns, system, placeholders


#: a turn's role, as written (lower case), to the role of record turns
_ROLE = {**{r: "user" for r in USER_ROLES}, **{r: "assistant" for r in ASSISTANT_ROLES},
         **{r: "system" for r in SYSTEM_ROLES}}


def dialogue(did: str, turns: list[dict], where: str, system: str | None = None,
             meta: dict | None = None) -> dict:
    """One existing conversation of a record's ``conversations`` layer: its original id, turns,
    where it was read (``file:line``), system prompt and the item's other plain fields."""
    out: dict[str, Any] = {"id": did, "turns": turns, "where": where}
    if system:
        out["system"] = system
    if meta:
        out["meta"] = meta
    return out


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


#: fields of a conversation item that are read as layers, not kept as its plain metadata
ITEM_FIELDS = frozenset({"id", "image", "images", "conversations", "messages", "captions",
                         "instances"})


def item_meta(item: dict) -> dict:
    """The plain (string, number, bool) fields of an item beyond those read as layers, e.g. the
    ``type`` of LLaVA's GPT-4 answers or the ``task``/``source``/``split`` of vlitc's exports."""
    return {k: v for k, v in item.items()
            if k not in ITEM_FIELDS and isinstance(v, (str, int, float, bool))}


def item_images(item: dict) -> str | tuple[str, ...] | None:
    """The image path(s) an item names: ``image`` (a path or a list, LLaVA / OneVision) or
    ``images`` (a list, LLaMA-Factory / ShareGPT messages); one path, a tuple of several, or None.
    A ``datasets.Image`` value (``{bytes, path}``, a Parquet release with ``images: embed``) is
    read by its path."""
    raw = item.get("images", item.get("image"))
    if isinstance(raw, list):
        names = tuple(n for x in raw if (n := _image_name(x)))
        return None if not names else names[0] if len(names) == 1 else names
    return _image_name(raw)


def _image_name(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("path")
    return value if isinstance(value, str) and value else None


class ConversationSource(AnnotationSource):
    """Base of the loaders of existing instruction data: one item per conversation, with its
    image(s); items on one record id merge into one record with one ``conversations`` entry each
    (ids made unique: ``id#2``...)."""

    builds_apart = True

    def record_id(self, did: str, image: str | tuple[str, ...] | None) -> str:
        """The item's (unique) id, or with ``id: image`` its image's id (the COCO id when the
        file name has one, else the file stem)."""
        if self.params["id"] == "image" and isinstance(image, str):
            name = PurePosixPath(image).name
            return coco_id(name) or PurePosixPath(name).stem
        return did

    def stream_entries(self, ctx: OpContext, issues: Issues) -> Iterator[Entry] | None:
        """With ``id: item`` every item is a record of its own: the file is read item by item
        (ids made unique as they come, as :func:`unique_ids` makes them); ``id: image`` groups
        items of one image from anywhere in the file, so it reads them all first."""
        if self.params["id"] != "item":
            return None
        path = self.path(ctx, "file")
        return self._items(path, issues)

    def pack(self, entries: list[Entry]) -> Any:
        """An item read from JSON travels as its JSON text (parsed again where its record is
        built: cheaper than pickling the parsed item), others as they are."""
        return [(e.rid, e.path, e.split, [(where, item if raw is None else None, did, image, raw)
                                          for where, item, did, image, raw in e.data])
                for e in entries]

    def unpack(self, packed: Any) -> list[Entry]:
        import orjson

        return [Entry(rid, path, None, None, [(where, orjson.loads(raw) if item is None else item,
                                               did, image, raw)
                                              for where, item, did, image, raw in data], split)
                for rid, path, split, data in packed]

    def _items(self, path: Path, issues: Issues) -> Iterator[Entry]:
        seen: dict[str, int] = {}
        name = path.name
        for i, (line, item, raw) in enumerate(iter_items(path, ("data", "train"), raw=True)):
            if type(item) is not dict:
                issues.add("bad_item", f"{name}:{line or i}")
                continue
            where = f"{name}:{line}" if line else f"{name}[{i}]"
            did = item.get("id", i)
            did = did if type(did) is str else str(did)
            n = seen.get(did, 0) + 1
            seen[did] = n
            if n > 1:
                issues.add("duplicate_id", did)
                did = f"{did}#{n}"
            image = item_images(item)
            yield Entry(did, image, None, None, [(where, item, did, image, raw)])

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        path = self.path(ctx, "file")
        items = []
        for i, (line, item) in enumerate(read_items(path, ("data", "train"))):
            if not isinstance(item, dict):
                issues.add("bad_item", f"{path.name}:{line or i}")
                continue
            where = f"{path.name}:{line}" if line else f"{path.name}[{i}]"
            items.append((where, item, str(item.get("id", i))))
        dids = unique_ids([did for _, _, did in items], issues)
        pairs = []
        for (where, item, _), did in zip(items, dids, strict=True):
            image = item_images(item)
            pairs.append(((self.record_id(did, image), image), (where, item, did, image, None)))
        return [Entry(rid, image, None, None, group_items)
                for (rid, image), group_items in group(pairs).items()]

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        out: dict[str, Any] = {}
        for where, item, did, image, _raw in data:
            raw = item.get("conversations", item.get("messages"))
            if raw is None:
                continue
            turns, system, n = read_turns(raw, issues, where,
                                          keep_placeholders=isinstance(image, tuple))
            want = len(image) if isinstance(image, tuple) else 1 if image else 0
            if turns and n != want:
                kind = "placeholder_in_text_only" if not want else "image_placeholder_count"
                issues.add(kind, {"item": where, "placeholders": n, "images": want})
            if turns:
                out.setdefault("conversations", []).append(
                    dialogue(did, turns, where, system, item_meta(item)))
        return out


@register("source", "sharegpt")
class ShareGptSource(ConversationSource):
    """Load instruction data in ShareGPT style (``conversations`` of from/value turns, or chat
    ``messages`` of role/content turns), JSON, JSON Lines or Parquet, with or without images:
    ``images`` (a list, LLaMA-Factory's sharegpt layout) or ``image`` name them under the
    ``images`` folder. Each item is one conversation; ``id: image`` merges the items on one
    image into one record (COCO id when the file name has one), to join with annotations.
    """

    version = 2
    file_params = ("file",)
    writes = ("id", "image", "conversations")
    params_schema = schema(
        {
            "file": FILE | {"description": "JSON array, JSON Lines or Parquet of conversations"},
            "id": ID_PARAM,
            **IMAGES,
            **SAMPLING,
        },
        required=("file",),
    )
