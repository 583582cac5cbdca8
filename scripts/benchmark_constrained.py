"""What the constraint costs: tokens/s with and without ``constrain=``, and the mask step at Molmo2's vocabulary size.

Why: ``constrain="points"`` masks the logits at every step. Two measurements, both offline, every figure
measured on the machine that runs it:

1. Tokens/s of ``generate`` on the tiny random Molmo2 (``molmo_nb_utils.tiny``, a vocabulary of about 500
   tokens) with and without the constraint, on the same one-image prompts prepared once, as a ratio in this
   one run, and the processor's own time per token (answers kept to points with ``allow_none=False``, so
   both write about as many tokens; tokens/s counts the tokens each actually wrote). The tiny model's step
   is far cheaper than a real one's, so its ratio is the worst case.
2. The mask step alone over a vocabulary of Molmo2's real size. No tokenizer can be downloaded here, so one
   is built offline: a byte-level BPE with Qwen2's pre-tokenizer (digits one by one, as Molmo2-4B's
   tokenizer splits them) trained with ``tokenizers`` on the Python sources and docs installed on this
   machine to 151,643 tokens, plus ChatML's and Molmo2's special tokens (cached under
   ``downloaded_data/benchmark/``; the first run trains it, minutes). On it: the time to compile a
   question's pattern (once per question shape, cached), and the processor's step (mask built and applied
   to one row of logits) following a real answer, the first visit of each state and the cached one,
   beside the step of the softmax and argmax every decoding step pays anyway. With ``xgrammar`` installed
   (not a dependency) the same patterns are compiled and masked by it too, the comparison behind the
   choice of outlines-core (see ``molmo_nb_utils/constrain/automaton.py``).

    .venv/bin/python scripts/benchmark_constrained.py                 # both parts
    .venv/bin/python scripts/benchmark_constrained.py --part mask     # the 152k vocabulary only
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from molmo_nb_utils.paths import INPUT_DIR, REPO_ROOT  # noqa: E402

QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_TEXT_TOKENS = 151_643  # Qwen2's byte-level BPE before its special tokens (Molmo2-4B and 8B)
ANSWER = '<points coords="1 1 308 305 2 752 377 3 520 611;2 4 555 169">curb ramp</points>'


def tiny_tokens_per_second(rounds: int, new_tokens: int) -> None:
    import torch

    from molmo_nb_utils.asking import prepare_inputs, user_message
    from molmo_nb_utils.constrain import ConstrainedAnswers, Constraint, Question, with_constraint
    from molmo_nb_utils.loading import load_model
    from molmo_nb_utils.tiny import build_tiny_molmo2

    with tempfile.TemporaryDirectory() as folder:
        model, processor = load_model(build_tiny_molmo2(Path(folder) / "tiny"), dtype="float32")
    questions = [f"Point to the {thing}." for thing in ("coins", "cups", "cats", "boats")]
    inputs = [prepare_inputs(processor, [user_message(INPUT_DIR / "coins.jpg", text=q)]) for q in questions]
    constraints = {"free": None, "points": Constraint("points", allow_none=False), "count, exact total":
                   Constraint("count", exact_total=True, allow_none=False)}  # fmt: skip
    totals = {
        name: [0, 0.0, 0.0] for name in constraints
    }  # tokens, seconds of generate, of which the processor's
    step = ConstrainedAnswers.__call__
    spent = [0.0]

    def timed(self, input_ids, scores):
        begin = time.perf_counter()
        out = step(self, input_ids, scores)
        spent[0] += time.perf_counter() - begin
        return out

    ConstrainedAnswers.__call__ = timed
    for round_ in range(rounds + 1):  # round 0 warms up (the patterns are compiled there) and is not counted
        for name, constraint in constraints.items():  # interleaved, so a change in load hits all alike
            for encoded in inputs:
                kwargs = {} if constraint is None else with_constraint(
                    model, processor, constraint, [Question(images=1)], new_tokens, {}
                )  # fmt: skip
                torch.manual_seed(round_)
                spent[0] = 0.0
                begin = time.perf_counter()
                with torch.inference_mode():
                    out = model.generate(**encoded, max_new_tokens=new_tokens, do_sample=True, **kwargs)
                seconds = time.perf_counter() - begin
                if round_:
                    totals[name][0] += out.shape[1] - encoded["input_ids"].shape[1]
                    totals[name][1] += seconds
                    totals[name][2] += spent[0]
    ConstrainedAnswers.__call__ = step
    free = totals["free"][0] / totals["free"][1]
    print(f"\n1. tiny Molmo2 ({len(processor.tokenizer)} tokens): generate on coins.jpg, {rounds} x {len(questions)} "
          f"sampled answers of up to {new_tokens} tokens each way (prefill included, the same prompts each way):")  # fmt: skip
    for name, (tokens, seconds, mine) in totals.items():
        rate = tokens / seconds
        share = f", of which the processor {1e3 * mine / tokens:.2f} ms a token" if mine else ""
        print(
            f"   {name:20s} {tokens:5d} tokens in {seconds:6.2f} s = {rate:6.1f} tokens/s, {rate / free:.2f}x free{share}"
        )


def real_size_tokenizer(folder: Path, text_mb: int):
    """A byte-level BPE of Qwen2's size, trained here (see the module docstring); cached in ``folder``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from molmo_nb_utils.tiny import CHATML_TOKENS, MEDIA_TOKENS

    path = folder / f"bpe-{QWEN2_TEXT_TOKENS}-{text_mb}mb.json"
    if not path.is_file():
        roots = [Path(os.__file__).parent, Path(__import__("transformers").__file__).parents[1]]

        def texts():
            read = 0
            for root in roots:
                for file in sorted(root.rglob("*")):
                    if file.suffix in (".py", ".md", ".rst", ".txt") and file.is_file():
                        try:
                            text = file.read_text(encoding="utf-8")
                        except (OSError, UnicodeDecodeError):
                            continue
                        read += len(text)
                        yield text
                        if read > text_mb * 2**20:
                            return

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )  # fmt: skip
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=QWEN2_TEXT_TOKENS + len(CHATML_TOKENS), special_tokens=CHATML_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )  # fmt: skip
        start = time.perf_counter()
        print(
            f"   training the {QWEN2_TEXT_TOKENS:,}-token BPE on up to {text_mb} MB of local text ...",
            flush=True,
        )
        tokenizer.train_from_iterator(texts(), trainer=trainer)
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(path))
        print(f"   trained in {time.perf_counter() - start:.0f} s, saved to {path}")
    fast = PreTrainedTokenizerFast(
        tokenizer_file=str(path), eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.add_special_tokens({"additional_special_tokens": MEDIA_TOKENS})
    return fast


def mask_step(folder: Path, text_mb: int) -> None:
    import numpy as np
    import torch

    from molmo_nb_utils.constrain import Constraint, Question, answer_pattern, answer_processor, token_bytes
    from molmo_nb_utils.constrain.automaton import compile_pattern

    print("\n2. the mask step over a vocabulary of Molmo2's size")
    tokenizer = real_size_tokenizer(folder, text_mb)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    width = 151_936  # Molmo2-4B's logits (Qwen2's embedding rows, padded)
    start = time.perf_counter()
    vocab = token_bytes(tokenizer, (eos,))
    print(f"   vocabulary: {len(tokenizer):,} tokens, logits {width:,} wide; token bytes read in "
          f"{time.perf_counter() - start:.2f} s (once per tokenizer)")  # fmt: skip
    tracks = ANSWER.replace("points", "tracks").replace('"1 ', '"0.0 ').replace(";2 ", ";0.5 ")
    cases = {  # name: (constraint, question, an answer it allows)
        "points, 2 images": (Constraint("points"), Question(images=2), ANSWER),
        "count, 2 images": (
            Constraint("count"),
            Question(images=2),
            f"Counting the {ANSWER} shows a total of 4.",
        ),
        "tags (True), 2 images": (
            Constraint(),
            Question(images=2),
            f"Here they are: {ANSWER}, four of them.",
        ),
        "tracks, 64 frames": (
            Constraint("tracks"),
            Question(timestamps=tuple(i / 2 for i in range(64))),
            tracks,
        ),
    }
    logits = torch.randn(1, width)
    baseline = []
    for _ in range(50):
        begin = time.perf_counter()
        logits.softmax(-1).argmax(-1)
        baseline.append(time.perf_counter() - begin)
    base_ms = statistics.median(baseline) * 1e3
    print(f"   softmax + argmax of one row of {width:,} logits (paid every step anyway): {base_ms:.3f} ms")
    for name, (constraint, question, answer) in cases.items():
        pattern = answer_pattern(constraint, images=question.images, timestamps=question.timestamps)
        begin = time.perf_counter()
        compile_pattern(pattern, vocab)
        compiled = time.perf_counter() - begin
        text = tokenizer(answer, add_special_tokens=False)["input_ids"]
        steps = {}
        processor = answer_processor(constraint, [question], vocab, 256)
        for visit in ("first visit", "cached"):
            processor.width = None  # a new generate call; the masks built on the first visit stay cached
            ids = torch.zeros(1, 4, dtype=torch.long)
            times = []
            for token in text:
                begin = time.perf_counter()
                processor(ids, logits.clone())
                times.append(time.perf_counter() - begin)
                ids = torch.cat([ids, torch.tensor([[token]])], 1)
            steps[visit] = np.median(times) * 1e3
        print(f"   {name:22s} compile {compiled:6.2f} s; step {steps['first visit']:7.3f} ms first visit, "
              f"{steps['cached']:7.3f} ms cached ({steps['cached'] / base_ms:.1f}x softmax + argmax)")  # fmt: skip
    try:
        import xgrammar as xgr
    except ImportError:
        print("   (xgrammar is not installed: pip install xgrammar to compare it)")
        return
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=width, stop_token_ids=[eos])
    compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
    for name, (constraint, question, answer) in cases.items():
        pattern = answer_pattern(constraint, images=question.images, timestamps=question.timestamps)
        begin = time.perf_counter()
        grammar = compiler.compile_regex(pattern)
        compiled = time.perf_counter() - begin
        matcher, bitmask = xgr.GrammarMatcher(grammar), xgr.allocate_token_bitmask(1, width)
        times = []
        for token in tokenizer(answer, add_special_tokens=False)["input_ids"]:
            begin = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            xgr.apply_token_bitmask_inplace(logits.clone(), bitmask)
            times.append(time.perf_counter() - begin)
            matcher.accept_token(token)
        print(f"   xgrammar {name:13s} compile {compiled:6.2f} s; step {statistics.median(times) * 1e3:7.3f} ms "
              "(it cannot tell the fewest tokens that finish: see automaton.py)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "tiny", "mask"), default="all")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 4 questions each way (tiny part)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--text-mb", type=int, default=300, help="local text the 152k BPE is trained on")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "downloaded_data" / "benchmark")
    args = parser.parse_args()
    torch_threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores (OMP_NUM_THREADS={torch_threads}); load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start")  # fmt: skip
    if args.part in ("all", "tiny"):
        tiny_tokens_per_second(args.rounds, args.new_tokens)
    if args.part in ("all", "mask"):
        mask_step(args.cache, args.text_mb)


if __name__ == "__main__":
    main()
