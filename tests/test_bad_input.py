"""Bad input, as a reader would type it: one line that names what is allowed, never a traceback.

The functions under test are read from the notebooks (every ``module.function(...)`` a code
cell calls), so a function a notebook starts calling is attacked here too, or this file fails
until someone says how to call it (``GOOD``) or why it has no simple input (``NOT_SCALAR``).
Each parameter of a simple type, read from its annotation (a number, a choice, a list, a flag,
text, a table of rows), gets out-of-range, wrong-type, NaN, ±inf, None and empty values; each
must give a ``WorkbookError`` of one line that says what is allowed. A table of rows may also
be empty (nothing recorded yet): then an empty result or one line. Every explorer control, set
from Python to a value it cannot take, must say so in one line and keep its value (ipywidgets
would clamp a slider silently).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from workbook.config import WorkbookError

ROOT = Path(__file__).resolve().parent.parent
NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------ what the notebooks call


def notebook_calls() -> set[str]:
    """``module.function`` for every call of a workbook module's attribute in a code cell."""
    import pkgutil

    import workbook

    modules = {info.name for info in pkgutil.iter_modules(workbook.__path__)}
    found = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        tree = ast.parse("\n".join("".join(c["source"]) for c in cells
                                   if c["cell_type"] == "code"))
        alias = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workbook"):
                for name in node.names:
                    alias[name.asname or name.name] = (
                        name.name if node.module == "workbook"
                        else f"{node.module.split('.')[1]}.{name.name}")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and alias.get(func.value.id) in modules):
                found.add(f"{alias[func.value.id]}.{func.attr}")
            elif isinstance(func, ast.Name) and "." in alias.get(func.id, ""):
                found.add(alias[func.id])
    return found


def resolve(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(f"workbook.{module}"), name)


# --------------------------------------------------------------- how to call each one

class Make:
    """A good argument that is an object (a model, a tensor): built when a test runs."""

    def __init__(self, build):
        self.build = build


def built(kwargs: dict) -> dict:
    return {k: v.build() if isinstance(v, Make) else v for k, v in kwargs.items()}


def _tiny_config():
    from workbook.model import ModelConfig

    return ModelConfig(vocab_size=512, d_model=16, n_layers=1, n_heads=2, seq_len=16)


def _tiny_model():
    from workbook.model import build_model

    return build_model(_tiny_config(), 0)


def _tokenizer():
    from workbook.data import load_tokenizer

    return load_tokenizer(512)


def _randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _grads():
    from workbook.precision import GRAD_KINDS

    return {kind: _randn(256) * 1e-6 for kind in GRAD_KINDS}


def _llama_7b():
    from workbook.lora import llama_config

    return llama_config("7b")


def _isoflop_small():
    from workbook.scaling_laws import ISOFLOP_PRESETS

    return ISOFLOP_PRESETS["small"]


def _chat_tokenizer():
    from workbook.sft import prepare_model

    return prepare_model(_tiny_model(), _tokenizer())[1]


def _record():
    from workbook.sft import task_records

    return task_records(["add"], 1, seed=0)[0]


CONFIG, MODEL, TOKENIZER = Make(_tiny_config), Make(_tiny_model), Make(_tokenizer)
CHAT_TOKENIZER, RECORD = Make(_chat_tokenizer), Make(_record)
IDS = Make(lambda: torch.arange(400) % 512)
QKV = Make(lambda: _randn(1, 1, 32, 8, dtype=torch.float64))

# A valid call of each function with parameters: the test changes one argument at a time.
GOOD: dict[str, dict] = {
    "attention.tiled_attention_forward": {"q": QKV, "k": QKV, "v": QKV, "block_m": 16,
                                          "block_n": 16},
    "attention.reference_attention": {"q": QKV, "k": QKV, "v": QKV},
    "attention.overlapped_attention_forward": {"q": QKV, "k": QKV, "v": QKV, "block_m": 16,
                                               "block_n": 8},
    "attention.gluon_on_cpu_table": {"seeds": 1, "seq_len": 128},
    "attention.gluon_protocol_table": {"seeds": 1, "seq_len": 128},
    "attention.gluon_trace_table": {"seed": 0, "turns": 5},
    "data_scale.bytes_per_token": {"tokenizer": TOKENIZER, "text": "Return the"},
    "data_scale.input_tensor": {"batch": 64, "seq_len": 512, "d_model": 768},
    "data_scale.measure_corpora": {"vocab_size": 4096},
    "data.random_batch": {"ids": IDS, "batch_size": 2, "seq_len": 8,
                          "generator": Make(torch.Generator)},
    "flops.flops_per_token": {"cfg": CONFIG},
    "flops.attention_flops_per_token": {"n_layers": 2, "seq_len": 64, "d_model": 32},
    "flops.formula_vs_counted": {"cfg": CONFIG, "batch_size": 1},
    "lora.lora_params": {"config": Make(_llama_7b), "rank": 8, "targets": "qv"},
    "lora.matched_ranks": {"config": Make(_llama_7b), "rank": 8},
    "model.build_model": {"cfg": CONFIG, "seed": 0},
    "model.load_base_model": {"preset": "small", "seed": 0, "device": "cpu"},
    "model.base_model_log": {"preset": "small", "seed": 0},
    "precision.log2_histogram": {"grads": Make(_grads), "low": -60, "high": 10},
    "precision.loss_scale_explorer": {"grads": Make(_grads), "log2_scale": 0},
    "precision.share_rows": {"grads": Make(_grads), "log2_scales": (0,)},
    "precision.stagnation_sweep": {"weights": Make(lambda: _randn(256)),
                                   "grads": Make(lambda: _randn(256)), "lrs": (1e-3,)},
    "precision.format_lines": {"formats": ("fp16",)},
    "pretraining.evaluate": {"model": MODEL, "ids": IDS, "batch_size": 2, "seq_len": 8,
                             "n_batches": 1, "device": torch.device("cpu")},
    "pretraining.sample": {"model": MODEL, "tokenizer": TOKENIZER, "prompt": "Return the",
                           "max_new_tokens": 2},
    "pretraining.shift_table": {"tokenizer": TOKENIZER, "x": Make(lambda: torch.arange(8)),
                                "y": Make(lambda: torch.arange(1, 9)), "n": 4},
    "pretraining.show_tokens": {"tokenizer": TOKENIZER, "text": "Return the"},
    "qlora.bin_occupancy": {"x": Make(lambda: _randn(64, 64)), "fmt": "nf4", "blocksize": 64},
    "qlora.quantization_error": {"weights": Make(lambda: {"w": _randn(64, 64)}),
                                 "blocksize": 64},
    "sft.task_records": {"tasks": ["add"], "n": 2, "seed": 0},
    "lora.scratch_vs_peft": {"model": MODEL, "rank": 2, "seed": 0, "seq_len": 8},
    "lora.multi_adapter_demo": {"model": MODEL, "rank": 2, "seed": 0, "seq_len": 8},
    "model.count_params": {"cfg_or_model": CONFIG, "non_embedding": False},
    "scaling_laws.plan_sweep": {"cfg": Make(_isoflop_small)},
    "sft.encode_chat": {"record": RECORD, "tokenizer": CHAT_TOKENIZER, "policy": "answer_only"},
    "sft.render": {"messages": Make(lambda: RECORD.build()["messages"]),
                   "tokenizer": CHAT_TOKENIZER},
    "sft.loss_claims": {"library_loss": 2.0, "our_loss": 2.0, "grad_masked": 0.0},
    "widgets.dropdown": {"description": "rank", "options": [1, 2, 4], "value": 2},
    "widgets.ExperimentPanel": {"experiment": "memory_breakdown", "fields": ["batch"],
                                "y": "bytes"},
    "attention.notebook_rows": {"name": "attention_gpt2_medium", "live_on_cpu": False},
    "data.load_corpus": {"verify": True},
    "attention.Case": {"variant": "vanilla", "seq_len": 64, "head_dim": 64},
    "attention.memory_hierarchy": {"device_name": "H100"},
    "attention.recorded_device": {"default": "H100"},
    "claims.Claim": {"claim": "c", "source": "s", "predicted": 1.0, "measured": 1.0},
    "claims.verdict": {"predicted": 1.0, "measured": 1.0},
    "claims.direction_verdict": {"holds": True, "measured": 1.0},
    "config.resolve_preset": {"preset": "small"},
    "data.load_tokenizer": {"vocab_size": 4096},
    "data.token_ids": {"split": "val", "vocab_size": 4096},
    "evaluation.knob_sweep": {"knob": "noise", "values": [1.0], "seeds": (0,)},
    "evaluation.leaderboard_explorer": {"seed": 0},
    "flops.quick_config": {"preset": "small"},
    "flops.recorded_or_note": {"name": "roofline"},
    "flops.training_time": {"n_params": 1e9, "n_tokens": 1e10, "gpu": "A100", "n_gpus": 8,
                            "utilization": 0.4},
    "hardware.datasheet": {"device_name": "H100"},
    "lora.llama_config": {"size": "7b"},
    "memory.bytes_per_param": {"precision": "fp32", "optimizer": "adamw"},
    "memory.scenario": {"model": "GPT-2 (124M)", "precision": "fp32", "seq_len": 1024,
                        "batch": 1, "checkpointing": False},
    "memory.training_memory": {"n_params": 1e9, "precision": "mixed", "activations": 0.0},
    "model.ModelConfig": {"vocab_size": 512, "d_model": 16, "n_layers": 1, "n_heads": 2,
                          "seq_len": 16},
    "model_parallel.analytic_view": {"p": 4, "m": 8, "tp": 2, "d_model": 1024,
                                     "seq_len": 2048, "micro_batch": 1, "dtype": "bf16"},
    "model_parallel.bubble_fraction": {"p": 4, "m": 8},
    "model_parallel.moe_capacity": {"n_tokens": 100, "n_experts": 4, "top_k": 2,
                                    "capacity_factor": 1.0},
    "model_parallel.world_size": {"n_ranks": 0},
    "model_parallel.gpu_rows": {"name": "tensor_parallel"},
    "precision.explore": {"value": 0.1},
    "precision.format_explorer": {"value": "0.1"},
    "pretraining.TrainConfig": {"steps": 10, "batch_size": 2, "seq_len": 16},
    "pretraining.live_config": {"preset": "small"},
    "pretraining.perplexity": {"loss": 2.0},
    "qlora.bits_per_param": {"blocksize": 64, "double_quant": True},
    "qlora.bnb_codebook": {"kind": "nf4"},
    "qlora.nf4_codebook": {"offset": None},
    "qlora.predict_vram": {"size": "7b", "method": "qlora", "rank": 64, "batch_size": 1,
                           "seq_len": 512},
    "qlora.predicted_rows": {"sizes": ["7b"], "methods": ["qlora"], "rank": 64},
    "qlora.stored_bits_per_param": {"shape": (64, 64), "blocksize": 64},
    "registry.live_or_recorded": {"name": "roofline", "preset": "small"},
    "registry.plan": {"preset": "small"},
    "registry.shown": {"name": "roofline"},
    "results.load": {"experiment": "roofline"},
    "scaling_laws.allocation": {"compute": 1e21},
    "scaling_laws.allocation_explorer": {"compute": 1e21},
    "scaling_laws.overtraining_explorer": {"target_loss": 2.2, "inference_tokens": 1e13},
    "scaling_laws.placement": {"law": "20 tokens/param"},
    "zero.formula_table": {"n_params": 7.5e9, "n_gpus": 64},
    "zero.predicted_memory": {"variant": "zero1", "n_params": 1e9, "n_gpus": 8},
    "zero.deepspeed_estimates": {"n_params": 10**9, "n_largest_layer": 10**7, "n_gpus": 8},
}

# Functions the notebooks do not call by name but whose explorer or claims table they show.
BEHIND_THE_NOTEBOOKS = {"claims.verdict", "claims.direction_verdict", "flops.training_time",
                        "data_scale.bytes_per_token", "data_scale.input_tensor",
                        "hardware.datasheet", "memory.scenario", "memory.training_memory",
                        "model_parallel.bubble_fraction", "model_parallel.moe_capacity",
                        "zero.predicted_memory"}

# Parameters where any text is fine (a label, a fallback device name) or any number.
FREE = {"claim", "source", "unit", "where", "title", "offset", "default"}

# Values a function takes on purpose, with the reason.
ALSO_FINE = {
    # NaN is how a claims table says "not measured here"; any finite number can be a claim.
    **{(f, p): [NAN, -1e300, 1e300] for f in ("claims.verdict", "claims.Claim")
       for p in ("predicted", "measured")},
    ("claims.direction_verdict", "measured"): [NAN, -1e300, 1e300],
    # NaN bounds mean "no interval"; any finite pair can be a measured interval
    **{("claims.Claim", p): [NAN, -1e300, 1e300] for p in ("low", "high")},
    # a best-case bound is an interval's end: NaN "none", any finite number possible
    **{(f, "best_bound"): [NAN, -1e300, 1e300] for f in ("claims.verdict", "claims.Claim")},
    # what a float format makes of NaN, ±inf and 1e300 is the point of the explorer
    ("precision.explore", "value"): [NAN, INF, -INF, -1e300, 1e300],
    # an unknown GPU (or a CPU) has no datasheet: None, which callers show as "no peak"
    ("hardware.datasheet", "device_name"): ["no-such-choice"],
    # a device with no recorded rows (this machine, the first time): no rows, not an error
    ("results.load", "device"): ["no-such-choice"],
    # x and group may name a column of the rows, known only once a run returns them (then a
    # name that is neither a field nor a column is one line under the panel)
    **{("widgets.ExperimentPanel", p): ["no-such-choice"] for p in ("x", "group")},
}

# Cases handled elsewhere and expected to fail here (none left: results.py checks its inputs).
ELSEWHERE: dict = {}

# Functions without a simple-typed input (no parameters, or only objects the workbook built:
# a model, tensors, a figure's draw function, chat records), with the reason.
NOT_SCALAR = {
    "attention.claims": "tables", "attention.exactness_table": "tables",
    "attention.gpt2_table": "tables", "attention.kernel_source": "no input",
    "attention.relative_error": "tensors",
    "attention.saved_bytes": "a Case (checked as attention.Case)",
    "attention.size_explorer": "explorer: see test_explorer_controls",
    "attention.targets": "tables",
    "claims.claims_table": "Claims (checked as claims.Claim)", "data.manifest": "no input",
    "flops.calculator": "explorer: see test_explorer_controls",
    "flops.matmul_params": "a ModelConfig", "flops.lecture_examples": "no input",
    "flops.run_mfu_benchmark": "an MfuConfig (checked as an experiment config)",
    "hardware.describe": "no input", "hardware.detect": "no input", "hardware.tools": "no input",
    "hardware.roofline_explorer": "explorer: see test_explorer_controls",
    "lora.trainable_summary": "model configs",
    "memory.lecture_175b": "no input",
    "memory.memory_explorer": "explorer: see test_explorer_controls",
    "model_parallel.bubble_explorer": "explorer: see test_explorer_controls",
    "plots.figure": "labels", "precision.capture_gradients": "a model and tensors",
    "precision.format_table": "no input", "precision.fp8_support": "no input",
    "pretraining.LiveCurve": "a plot", "pretraining.next_token_loss": "tensors",
    "pretraining.train": "a model (its TrainConfig is checked)",
    "registry.run_isolated": "see registry.live_or_recorded",
    "evaluation.pipeline_table": "no input",
    "scaling_laws.fit_parametric": "arrays",
    "scaling_laws.published_laws": "no input",
    "sft.category_counts": "records", "sft.collate": "encoded records",
    "sft.instructgpt_sizes": "no input",
    "sft.library_assistant_mask": "a record", "sft.load_instructions": "a path",
    "sft.masked_lm_loss": "tensors",
    "sft.masking_explorer": "explorer: see test_explorer_controls",
    "sft.objective_table": "a record", "sft.prepare_model": "a model",
    "widgets.Explorer": "controls and a draw function", "widgets.RunButton": "an action",
    "widgets.one_line_errors": "no input",
    "widgets.run_or_button": "starts an experiment (test_foundation calls it with a fake run)",
    "zero.formula_explorer": "explorer: see test_explorer_controls",
}

# Bad values by the kind of parameter, read from its annotation.
BAD_NUMBERS = [NAN, INF, -INF, None, "7", [], True, -1e300, 1e300]
BAD_CHOICES = [None, "", "no-such-choice", 3, NAN]
BAD_ROWS = [None, "rows", [1, 2]]
BAD_VALUES = [None, [], (), "abc", 3]
BAD_FLAGS = [None, "yes", 2, NAN]   # "no" would be True: a flag must be True or False
BAD_TEXT = [None, 3, NAN]  # free text (a prompt): any string will do, but it must be one
TEXT = {"prompt", "text", "prefix", "description"}


def kind(annotation: str) -> str | None:
    """The kind of an annotation this test attacks ('number', 'choice', 'values', 'flag',
    'rows'); None for objects (a model, a tensor), which come from ``GOOD``."""
    plain = annotation.replace(" | None", "")
    if plain in ("int", "float"):
        return "number"
    if plain == "str":
        return "choice"
    if plain.startswith(("tuple[", "Sequence[")):
        return "values"
    if plain == "bool":
        return "flag"
    if plain == "pd.DataFrame":
        return "rows"
    return None


def attacks():
    """(function, parameter, bad value, good kwargs) for every simple parameter."""
    for dotted in sorted(notebook_calls() | BEHIND_THE_NOTEBOOKS):
        if dotted in NOT_SCALAR:
            continue
        func = resolve(dotted)
        good = GOOD.get(dotted)
        for name, param in inspect.signature(func).parameters.items():
            what = kind(str(param.annotation))
            if what is None or name in FREE or (good is None and what != "rows"):
                continue  # a rows function's other arguments are attacked where they matter
            bad = {"number": BAD_NUMBERS, "choice": BAD_CHOICES, "rows": BAD_ROWS,
                   "values": BAD_VALUES, "flag": BAD_FLAGS}[what]
            bad = BAD_TEXT if name in TEXT else bad
            fine = ALSO_FINE.get((dotted, name), [])
            for value in bad:
                if value is None and "None" in str(param.annotation):
                    continue  # None is this parameter's documented default
                if any(value is v or value == v for v in fine):
                    continue
                open_there = ELSEWHERE.get((dotted, name), [])
                if open_there is None or any(value is v for v in open_there):
                    marks = [pytest.mark.xfail(strict=True, reason="issue 23's files")]
                else:
                    marks = []
                yield pytest.param(dotted, name, value, good, marks=marks,
                                   id=f"{dotted}:{name}={value!r}")


def test_every_notebook_function_is_attacked_or_excused():
    """A function a notebook starts calling must be listed: GOOD (how to call it), NOT_SCALAR
    (why it has no simple input), or take rows (attacked with the other tables empty)."""
    missing = []
    for dotted in sorted(notebook_calls()):
        params = inspect.signature(resolve(dotted)).parameters.values()
        required = [p for p in params if p.default is inspect.Parameter.empty
                    and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        takes_rows = any(kind(str(p.annotation)) == "rows" for p in params)
        if dotted not in GOOD and dotted not in NOT_SCALAR and not takes_rows and required:
            missing.append(dotted)
    assert not missing, f"say how to call these with good input (GOOD) or why not: {missing}"


def assert_one_line(exc: WorkbookError, call: str) -> None:
    text = str(exc)
    assert "\n" not in text, f"{call}: the error must be one line, got:\n{text}"
    assert re.search(r"allowed|choose|must|expected|need|known", text), (
        f"{call}: the error must say what is allowed: {text}")


def rows_call(dotted: str, bad_name: str | None = None, bad=None):
    """Call a rows function with every table empty (and ``bad_name`` set to ``bad``)."""
    func = resolve(dotted)
    kwargs = {}
    for name, param in inspect.signature(func).parameters.items():
        if param.default is not inspect.Parameter.empty:
            continue
        what = kind(str(param.annotation))
        kwargs[name] = pd.DataFrame() if what == "rows" else {} if "dict" in str(
            param.annotation) else "x" if what == "choice" else 1
    if bad_name is not None:
        kwargs[bad_name] = bad
    return func(**kwargs)


@pytest.mark.parametrize(("dotted", "name", "value", "good"), list(attacks()))
def test_bad_value_gives_one_line_naming_what_is_allowed(dotted, name, value, good):
    call = f"{dotted}({name}={value!r})"
    with pytest.raises(WorkbookError) as caught:
        if good is None:  # a rows function: the other tables empty
            rows_call(dotted, name, value)
        else:
            resolve(dotted)(**{**built(good), name: value})
    assert_one_line(caught.value, call)


ROWS_FUNCTIONS = sorted(
    d for d in notebook_calls() - set(NOT_SCALAR) - set(GOOD)
    if any(kind(str(p.annotation)) == "rows"
           for p in inspect.signature(resolve(d)).parameters.values()))


@pytest.mark.parametrize("dotted", ROWS_FUNCTIONS)
def test_no_rows_yet_is_shown_or_said_in_one_line(dotted):
    """An empty ledger is normal (nothing recorded yet): an empty result or one line."""
    try:
        rows_call(dotted)
    except WorkbookError as exc:
        assert_one_line(exc, f"{dotted}(empty rows)")


def test_the_issues_cases():
    """The cases that were found by hand, by name, so each has a plain reference."""
    from workbook import claims, flops, hardware, memory, model_parallel, zero

    calc = flops.calculator()
    for bad, words in (({"gpu": None}, "choose one of: 'A100'"),
                       ({"n_gpus": NAN}, r"allowed: 1 to 100000")):
        with pytest.raises(WorkbookError, match=words):
            calc.set(**bad)

    cases = [(lambda: claims.verdict(INF, 1.0), "finite"),
             (lambda: hardware.datasheet(None), "must name a device"),
             (lambda: model_parallel.moe_capacity(100, 0, 2, 1.0), "n_experts"),
             (lambda: memory.scenario("bogus", "fp32", 1024, 1, False), "choose one of"),
             (lambda: zero.predicted_memory("zero9", 1e9, 8), "choose one of"),
             (lambda: memory.training_memory(-5), "n_params")]
    for call, words in cases:
        with pytest.raises(WorkbookError, match=words):
            call()
    assert hardware.roofline_peaks(pd.DataFrame()) == {}, "no rows recorded: no peaks"
    assert claims.verdict(-1.0, 1.0) == "wrong (opposite signs)", "not 'measured -1× lower'"
    assert claims.verdict(1.0, NAN).startswith("n/a"), "NaN means not measured"
    assert (memory.training_memory(1e9)["GB"] >= 0).all(), "no negative GB"


def test_the_qlora_vram_dropdown_offers_only_sizes_worth_a_gigabyte_figure():
    """It offered the CPU test's 'tiny' shape, which read 0.0 GB for every method."""
    from workbook import qlora

    peaks = qlora.predicted_rows(list(qlora.VRAM_SIZES)).query("metric == 'peak'")["value"]
    assert "tiny" not in qlora.VRAM_SIZES and (peaks >= 0.05).all(), peaks.min()
    source = (ROOT / "notebooks" / "12_qlora.ipynb").read_text()
    assert "list(qlora.SHAPES)" not in source and "list(qlora.VRAM_SIZES)" in source


# ------------------------------------------------------------------------- explorers


def explorers():
    """Every explorer a notebook builds, by a name for the test id."""
    from workbook import (
        attention,
        evaluation,
        flops,
        hardware,
        memory,
        model_parallel,
        precision,
        sft,
        zero,
    )
    from workbook import scaling_laws as sl

    gen = torch.Generator().manual_seed(0)
    grads = {kind: torch.randn(1000, generator=gen) * 1e-6 for kind in precision.GRAD_KINDS}
    roof = pd.DataFrame({"kind": ["copy", "matmul"], "dtype": ["uint8", "bf16"],
                         "value": [3000.0, 800.0], "source": "measured", "status": "ok",
                         "unit": ["GB/s", "TFLOP/s"], "device": "test"})
    return {"flops.calculator": flops.calculator,
            "hardware.roofline_explorer": lambda: hardware.roofline_explorer(roof),
            "memory.memory_explorer": memory.memory_explorer,
            "zero.formula_explorer": zero.formula_explorer,
            "model_parallel.bubble_explorer": model_parallel.bubble_explorer,
            "scaling_laws.allocation_explorer": sl.allocation_explorer,
            "scaling_laws.overtraining_explorer": sl.overtraining_explorer,
            "evaluation.leaderboard_explorer": evaluation.leaderboard_explorer,
            "precision.format_explorer": precision.format_explorer,
            "precision.loss_scale_explorer": lambda: precision.loss_scale_explorer(grads),
            "attention.size_explorer": lambda: attention.size_explorer("H100"),
            "sft.masking_explorer": lambda: sft.masking_explorer(
                sft.task_records(["add"], 2, seed=0), _chat_tokenizer())}


def test_every_notebook_explorer_is_tried():
    built = {d for d in notebook_calls() if d.endswith(("_explorer", ".calculator"))}
    untried = built - set(explorers())
    assert not untried, f"add these explorers to explorers(): {sorted(untried)}"


def bad_values(control) -> list:
    """Values a control cannot take: beyond each end, NaN, ±inf, None, the wrong type."""
    import ipywidgets as w

    from workbook.widgets import control_range

    if isinstance(control, w.Dropdown):
        wrong_kind = 1 if any(isinstance(o, bool) for o in control.options) else True
        return ["no-such-option", None, NAN, 10**9, wrong_kind]
    if (bounds := control_range(control)) is not None:
        low, high = bounds
        return [high * 10 + 1, low - abs(low) - 1, NAN, INF, -INF, None, "3", [1]]
    return [None, 3, NAN]  # a text box takes text


@pytest.mark.parametrize("name", sorted(explorers()))
def test_explorer_controls(name):
    explorer = explorers()[name]()
    for control_name, control in explorer.controls.items():
        for value in bad_values(control):
            before = control.value
            with pytest.raises(WorkbookError) as caught:
                explorer.set(**{control_name: value})
            call = f"{name}.set({control_name}={value!r})"
            assert_one_line(caught.value, call)
            assert explorer.last_error == str(caught.value), f"{call}: shown under the figure"
            assert "⚠" in explorer.message.value, f"{call}: the message area shows it"
            same = control.value == before or (control.value != control.value
                                               and before != before)
            assert same, f"{call}: the control moved to {control.value!r} (silent clamp)"


def test_a_good_value_after_a_bad_one_clears_the_message():
    from workbook import evaluation

    arena = evaluation.leaderboard_explorer(seed=0)
    with pytest.raises(WorkbookError, match=r"noise=99 is out of range; allowed: 0.25 to 5"):
        arena.set(noise=99)
    assert arena.values["noise"] == 1.0, "noise=99 must not become 5.0"
    arena.set(noise=2.0)
    assert arena.last_error is None and arena.values["noise"] == 2.0


def test_one_line_errors_prints_one_line_in_a_kernel():
    """What a notebook shows for an uncaught WorkbookError: one line, no traceback."""
    from IPython.testing.globalipapp import get_ipython
    from IPython.utils.capture import capture_output

    shell = get_ipython()
    shell.run_cell("from workbook import widgets, claims; widgets.one_line_errors()")
    with capture_output() as out:
        shell.run_cell("claims.verdict(float('inf'), 1.0)")
    text = (out.stdout + out.stderr).strip()
    assert text.startswith("⚠") and len(text.splitlines()) == 1, text
