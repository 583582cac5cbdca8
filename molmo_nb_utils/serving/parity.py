"""Does the server answer as the notebook does? ``compare_server`` asks each case both ways and says where not.

A served model is only as good as the proof that it answers what the notebook answers: the same text, the same
points in pixels, from the same frames. Greedy decoding makes that a strict comparison, and where it fails the
row says which of the usual causes it is: whitespace, special tokens, another prompt (other frames or crops),
or, with the same prompt, other arithmetic (the server's precision).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from molmo_nb_utils.asking import DEFAULT_MAX_NEW_TOKENS, Answer, chat
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.serving.client import Reply, ask_server, served_model


@dataclass(frozen=True)
class ParityRow:
    """One case asked in process and of the server: what is the same, and why not where it is not."""

    case: str
    same_text: bool
    same_points: bool | None  # None: a text-only question, nothing to place
    same_frames: bool  # the same images or video frames, and the same prompt length
    points: int  # points (or track points) parsed from the in-process answer
    prompt_tokens: tuple[int, int]  # (in process, server)
    note: str
    local: Answer
    served: Answer

    @property
    def same(self) -> bool:
        return self.same_text and self.same_points is not False and self.same_frames


class ParityTable(tuple):
    """The rows of ``compare_server``; ``print`` shows them as a table, ``all_same`` sums them up."""

    @property
    def all_same(self) -> bool:
        return all(row.same for row in self)

    def __str__(self) -> str:
        def mark(value: bool | None) -> str:
            return "-" if value is None else "yes" if value else "NO"

        header = ("case", "same text", "same points", "same frames", "points", "prompt tokens", "note")
        rows = [
            (
                r.case,
                mark(r.same_text),
                mark(r.same_points),
                mark(r.same_frames),
                str(r.points),
                f"{r.prompt_tokens[0]} / {r.prompt_tokens[1]}",
                r.note or "-",
            )  # fmt: skip
            for r in self
        ]
        widths = [max(len(line[k]) for line in [header, *rows]) for k in range(len(header) - 1)]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
            + "  "
            + line[-1]
            for line in [header, *rows]
        )

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython shows the table, not a tuple of rows
        printer.text(str(self))


def _grounded(answer: Answer) -> list[Point] | None:
    """The answer's points in pixels (tracks for a tracking answer), or None for a text-only question."""
    if not answer.images and answer.video is None:
        return None
    return answer.tracks() if answer.video is not None and "<tracks" in answer else answer.points()


def _same_media(local: Answer, served: Answer) -> bool:
    if len(local.videos) != len(served.videos) or local.image_sizes != served.image_sizes:
        return False
    return all(
        a.indices == b.indices and a.timestamps == b.timestamps and a.size == b.size
        for a, b in zip(local.videos, served.videos, strict=True)
    )


def _without(text: str, special: Sequence[str]) -> str:
    for token in special:
        text = text.replace(token, "")
    return " ".join(text.split())


def _note(local: Answer, reply: Reply, special: Sequence[str], dtype: str) -> str:
    """Why the server's answer differs from the in-process one, in the order the causes are checked."""
    served, notes = reply.answer, []
    if reply.raw_text != served.text and local.text == served.text:
        notes.append("the server's text had surrounding whitespace (stripped, as chat strips)")
    if local.prompt_tokens != served.prompt_tokens:
        notes.append(
            f"the server built a {served.prompt_tokens}-token prompt, {local.prompt_tokens} here: it was shown "
            "other frames or crops (fps=, max_frames=, max_crops=), or another chat template"
        )
    elif local.text != served.text:
        if _without(local.text, special) == _without(served.text, special):
            notes.append("only special tokens or spacing differ: the server decodes with other settings")
        else:
            at = next(
                (k for k, (a, b) in enumerate(zip(local.text, served.text, strict=False)) if a != b), None
            )
            at = min(len(local.text), len(served.text)) if at is None else at
            notes.append(
                f"same prompt, other text from character {at} ({local.text[at : at + 12]!r} here, "
                f"{served.text[at : at + 12]!r} served): other arithmetic. The model here runs in {dtype}; a "
                f"server in another precision picks another token where two are nearly tied: serve in {dtype} "
                "(make serve PRECISION=...) to check"
            )
    return "; ".join(notes)


def compare_server(
    client: openai.OpenAI,
    model: Any,
    processor: Any,
    cases: Mapping[str, list[dict] | dict] | Sequence[list[dict] | dict],
    *,
    server_model: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    **chat_kwargs,
) -> ParityTable:
    """Ask each case in process (``chat``) and of the server (``server_chat``), greedily; return the table.

    ``cases``: named messages (``{"one image": [user_message(...)], ...}``) or a list of them. ``chat_kwargs``
    (``fps``, ``max_frames``, ``max_crops``, generate arguments) go to both. A row is the same when the texts are
    equal, the points parsed from them are equal in pixels, and both were shown the same images or frames in
    prompts of the same length; its note says why not.
    """
    if isinstance(cases, Mapping):
        named = list(cases.items())
    else:
        named = [(f"case {k + 1}", messages) for k, messages in enumerate(cases)]
    server_model = server_model or served_model(client)
    special = list(getattr(processor.tokenizer, "all_special_tokens", []))
    dtype = str(getattr(model, "dtype", "")).removeprefix("torch.") or "its precision"
    rows = []
    for name, messages in named:
        local = chat(model, processor, messages, max_new_tokens=max_new_tokens, **chat_kwargs)
        reply = ask_server(client, messages, model=server_model, max_new_tokens=max_new_tokens, **chat_kwargs)
        served = reply.answer
        local_points, served_points = _grounded(local), _grounded(served)
        rows.append(
            ParityRow(
                case=name,
                same_text=local.text == served.text,
                same_points=None if local_points is None else local_points == served_points,
                same_frames=_same_media(local, served) and local.prompt_tokens == served.prompt_tokens,
                points=len(local_points or []),
                prompt_tokens=(local.prompt_tokens, served.prompt_tokens),
                note=_note(local, reply, special, dtype),
                local=local,
                served=served,
            )
        )
    return ParityTable(rows)


def save_merged(model: Any, processor: Any, folder: str | os.PathLike) -> Path:
    """Fold a LoRA adapter into its base weights and save a plain Molmo2 that ``transformers serve`` serves.

    ``model`` is what ``fine_tune`` or ``load_adapter`` returned; it is changed (its LoRA layers are merged
    into the base weights). For a QLoRA adapter, load it on the 16-bit base first
    (``load_adapter(base, run, allow_other_base=True)``). ``folder`` must be new or empty; the model is saved
    beside it and moved in whole, so an interrupted save leaves no folder that looks like a model.
    """
    if not hasattr(model, "merge_and_unload"):
        raise TypeError(
            f"save_merged takes a model with a LoRA adapter (what fine_tune or load_adapter returns), not a "
            f"{type(model).__name__}: a plain model can be served from its own folder as it is."
        )
    folder = Path(folder).expanduser().absolute()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(
            f"{folder} exists and is not an empty folder: save into a new one (nothing was changed)."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".part"))
    try:
        merged = model.merge_and_unload()
        merged.save_pretrained(partial)
        processor.save_pretrained(partial)
        os.replace(partial, folder)  # a new or empty folder is replaced whole
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder
