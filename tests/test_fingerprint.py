"""The weights' fingerprint: what tells models apart where their folder path cannot (issue 22, items 3-5)."""

from __future__ import annotations

import copy

import peft
import pytest
import torch
from transformers import AutoModelForImageTextToText

from molmo_nb_utils.fingerprint import weights_fingerprint, weights_precision


def _base(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))


def _trained_lora(base: torch.nn.Module) -> torch.nn.Module:
    model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=2, target_modules=["0", "2"]))
    with torch.no_grad():  # as after training: B is no longer zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.01)
    return model


def test_the_same_weights_give_the_same_fingerprint_and_any_change_another():
    base = _base()
    assert (
        weights_fingerprint(base) == weights_fingerprint(_base()) == weights_fingerprint(copy.deepcopy(base))
    )
    assert weights_fingerprint(_base(seed=1)) != weights_fingerprint(base)  # other weights, same shapes
    one = copy.deepcopy(base)
    with torch.no_grad():
        one[0].weight[17, 33] += 1e-3  # one weight, likely between the sampled ones
    assert weights_fingerprint(one) != weights_fingerprint(base)


def test_a_merged_adapter_is_not_its_base():
    base = _base()
    lora = _trained_lora(base)
    merged = lora.merge_and_unload()
    assert [n for n, _ in merged.named_parameters()] == [n for n, _ in base.named_parameters()]  # looks alike
    assert len({weights_fingerprint(base), weights_fingerprint(lora), weights_fingerprint(merged)}) == 3


def test_precision_is_part_of_the_fingerprint_and_recorded():
    base = _base()
    half = copy.deepcopy(base).to(torch.bfloat16)
    assert weights_fingerprint(half) != weights_fingerprint(base)
    assert weights_fingerprint(copy.deepcopy(base).to(torch.float16)) != weights_fingerprint(half)
    config = type("Config", (), {"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                                          "bnb_4bit_quant_type": "nf4"}})()  # fmt: skip
    four = type("Model", (), {"dtype": torch.bfloat16, "config": config})()
    assert weights_precision(four) == {"dtype": "torch.bfloat16", "quantization": "bitsandbytes-4bit-nf4"}
    plain = type("Model", (), {"dtype": torch.float32})()
    assert weights_precision(plain) == {"dtype": "torch.float32", "quantization": None}


def test_weights_without_values_never_pass_for_real_ones():
    with torch.device("meta"):
        shapes = _base()
    assert weights_fingerprint(shapes).endswith("-shapes")
    assert weights_fingerprint(shapes).removesuffix("-shapes") != weights_fingerprint(_base())
    with pytest.raises(TypeError, match="torch model"):
        weights_fingerprint("allenai/Molmo2-4B")


def test_another_model_saved_into_the_same_folder_is_another_model(tiny_model_path, tmp_path):
    first = AutoModelForImageTextToText.from_pretrained(tiny_model_path)
    again = AutoModelForImageTextToText.from_pretrained(tiny_model_path)
    assert weights_fingerprint(first) == weights_fingerprint(again)
    with torch.no_grad():
        for param in again.parameters():
            param.mul_(1.5)
    again.save_pretrained(tmp_path / "model")
    first.save_pretrained(tmp_path / "other")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "model")
    assert weights_fingerprint(reloaded) != weights_fingerprint(first)
    assert weights_fingerprint(AutoModelForImageTextToText.from_pretrained(tmp_path / "other")) == (
        weights_fingerprint(first)
    )


def test_a_4bit_model_is_read_through_its_packed_weights():
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    plain = torch.nn.Linear(64, 64)

    def four_bit(weight: torch.Tensor) -> torch.nn.Module:
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.bfloat16, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4")
        layer.bias = torch.nn.Parameter(plain.bias.detach().clone())
        layer = layer.to("cpu")
        if not getattr(layer.weight, "bnb_quantized", False):
            layer.weight = layer.weight._quantize("cpu")  # bitsandbytes quantizes when a weight moves
        return layer

    a, b = four_bit(plain.weight.data), four_bit(plain.weight.data * 2)
    assert weights_fingerprint(a) == weights_fingerprint(four_bit(plain.weight.data))
    assert len({weights_fingerprint(a), weights_fingerprint(b), weights_fingerprint(plain)}) == 3
