"""The GPU speed-up settings (training.use_liger_kernel, training.torch_compile): validated as config,
resolved by the machine (Liger: CUDA and an importable liger_kernel), and said in the run's log."""

import pytest
import torch

from lora_app import speedups
from lora_app.config import ConfigError, RunConfig, TrainingSettings
from lora_app.events import read_events
from lora_app.train import train


def test_defaults_and_yaml_on_off():
    t = TrainingSettings()
    assert (t.use_liger_kernel, t.torch_compile) == ("auto", False)
    # YAML 1.1 reads bare on/off as booleans; they must still mean on/off
    cfg = RunConfig.from_yaml("training:\n  use_liger_kernel: off\n  torch_compile: true\n")
    assert (cfg.training.use_liger_kernel, cfg.training.torch_compile) == ("off", True)
    assert RunConfig.from_yaml("training:\n  use_liger_kernel: on\n").training.use_liger_kernel == "on"
    again = RunConfig.from_yaml(cfg.to_yaml())  # what config.yaml keeps reads back the same
    assert (again.training.use_liger_kernel, again.training.torch_compile) == ("off", True)


def test_bad_values_are_reported_together():
    with pytest.raises(ConfigError) as err:
        RunConfig.build({"training": {"use_liger_kernel": "fast", "torch_compile": "sometimes"}})
    text = "\n".join(err.value.problems)
    assert "training.use_liger_kernel" in text and "'auto', 'on' or 'off'" in text
    assert "training.torch_compile" in text


def test_auto_without_liger_is_off_and_says_so():
    if speedups.liger_available():
        pytest.skip("liger_kernel imports here; this test is about a machine without it")
    use, why = speedups.resolve_liger("auto", "cuda")
    assert use is False
    assert why == (
        "Liger kernels off: liger_kernel not installed (pip install liger-kernel to use them); "
        "training goes on without them"
    )
    assert speedups.resolve_liger("auto", "cpu") == (False, "Liger kernels off: they need a CUDA GPU (device cpu)")
    assert speedups.resolve_liger("off", "cuda") == (False, "Liger kernels off (training.use_liger_kernel: off)")
    with pytest.raises(
        ValueError, match=r"training.use_liger_kernel: on, but liger_kernel not installed\. Fix: pip install"
    ):
        speedups.resolve_liger("on", "cuda")
    with pytest.raises(ValueError, match=r"on needs a CUDA GPU \(this run is on cpu\)"):
        speedups.resolve_liger("on", "cpu")


def _run(tmp_path, tiny_model, **training):
    from conftest import EXAMPLE_QUOTES

    rd = tmp_path / "run"
    rd.mkdir()
    t = dict(
        max_steps=2,
        warmup_steps=0,
        max_length=32,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        save_steps=10,
        **training,
    )
    RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 16},
            "model": {"base_model_name_or_path": str(tiny_model)},
            "training": t,
        }
    ).save(rd / "config.yaml")
    return rd


def test_training_log_says_liger_off_on_cpu(tmp_path, tiny_model):
    rd = _run(tmp_path, tiny_model, torch_compile=True)  # auto (the default) on CPU; compile is CUDA only
    assert train(rd) == 0
    events, _ = read_events(rd)
    infos = {e["message"]: e for e in events if e["type"] == "info"}
    assert infos["Liger kernels off: they need a CUDA GPU (device cpu)"]["use_liger_kernel"] is False
    assert infos["torch.compile off: CUDA only"]["compiled_layers"] == 0
    assert events[-1]["status"] == "finished"


def test_liger_on_without_a_gpu_fails_before_the_model_loads(tmp_path, tiny_model):
    rd = _run(tmp_path, tiny_model, use_liger_kernel="on")
    assert train(rd) == 1
    events, _ = read_events(rd)
    assert events[-1]["status"] == "failed"
    assert "training.use_liger_kernel: on needs a CUDA GPU" in events[-1]["message"]
    assert not [e for e in events if e["type"] == "info"]  # nothing loaded: no "trainable params" line


def test_compile_decoder_layers_wraps_every_layer(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    layers = model.get_base_model().model.layers
    assert speedups.compile_decoder_layers(model) == len(layers) == model.config.num_hidden_layers
    assert all(layer._compiled_call_impl is not None for layer in layers)  # compiled at the first call
    assert speedups.compile_decoder_layers(torch.nn.Linear(2, 2)) == 0
