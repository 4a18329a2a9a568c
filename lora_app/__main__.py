"""Command-line twin of the UI.

python -m lora_app serve [--port 7860] [--share]
python -m lora_app train RUN_DIR [--resume]          # what the Start button runs
python -m lora_app train --config run.yaml [--runs DIR] [--preset "reference recipe"] [--set training.max_steps=20 ...]
python -m lora_app train --settings                  # every setting: default and what it does
python -m lora_app train --config run.yaml --print-commands   # the same on 1 GPU, N GPUs, N machines
accelerate launch --multi_gpu --num_processes N -m lora_app train --config run.yaml   # one rank each
python -m lora_app generate --adapter RUN_DIR/adapter --prompt "Two things are infinite: "
python -m lora_app push RUN_DIR [--repo owner/name] [--private]   # token: HF_TOKEN or .env
python -m lora_app data --show 5 FILE [--layout auto] [--base MODEL] [--max-length 256] [--train-on-prompt]
python -m lora_app merge RUN_DIR [--dtype bfloat16|float16|float32] [--push owner/name] [--private]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _overrides(pairs: list[str]) -> dict:
    import yaml

    from .config import ConfigError

    out: dict = {}
    bad = []
    for p in pairs:
        key, eq, val = p.partition("=")
        section, dot, name = key.strip().partition(".")
        if not (eq and dot and section and name):  # else "foo: is not a known setting" hides the format
            bad.append(f"--set {p}: expected SECTION.FIELD=VALUE (e.g. training.max_steps=50)")
            continue
        try:
            value = yaml.safe_load(val)
        except yaml.YAMLError:  # "*.jsonl" or "@x.jsonl" (file names YAML reads as an alias or
            value = val  # a reserved sign) are taken as written; the field's own check follows
        out.setdefault(section, {})[name] = value
    if bad:
        raise ConfigError(bad)
    return out


def _load_raw(path: str) -> dict:
    """A saved config file as a nested dict (validation is the preflight's job). A dump saved
    before a field existed gets what the app did then (config.saved_before), as RunConfig.load
    does: without it ``--config`` of an old run's config.yaml trained another adapter scale."""
    from .config import ConfigError, parse_raw, saved_before

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            [f"--config: cannot read {path} ({err.strerror}). Fix: give the path of a saved config.yaml."]
        ) from None
    return saved_before(parse_raw(text, json_text=path.endswith(".json")))


def main(argv: list[str] | None = None) -> int:
    from .hub_client import load_dotenv

    load_dotenv()  # ./.env (or LORA_APP_ENV_FILE): HF_TOKEN and settings not already in the environment
    ap = argparse.ArgumentParser(
        prog="python -m lora_app", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="start the web app")
    s.add_argument("--port", type=int, default=int(os.environ.get("PORT", os.environ.get("GRADIO_SERVER_PORT", 7860))))
    s.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    s.add_argument("--share", action="store_true", default=os.environ.get("GRADIO_SHARE", "") in ("1", "true"))
    t = sub.add_parser("train", help="run one training job (RUN_DIR) or a config file")
    t.add_argument("run_dir", nargs="?")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--config", help="a config.yaml/.json saved from the app")
    t.add_argument("--runs", default=None, help="folder for new run folders (default LORA_APP_HOME/runs)")
    t.add_argument(
        "--set",
        nargs="*",
        action="extend",  # "--set a=1 --set b=2" keeps both (the default "store" kept only the last)
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override settings (list: --settings)",
    )
    t.add_argument("--settings", action="store_true", help="print every setting, its default and its help")
    t.add_argument(
        "--print-commands",
        action="store_true",
        help="print the commands that run this --config on one GPU, several GPUs or several machines, and exit",
    )
    t.add_argument(
        "--preset",
        default=None,
        help="'reference recipe' or 'fast default' (lora_app/presets.py): its values under the config's and --set's "
        "(without it, settings left out take the defaults: the 'fast default' values)",
    )
    g = sub.add_parser("generate", help="complete a prompt with a base model and optional adapter")
    g.add_argument("--adapter", default=None, help="adapter folder or Hub repo id")
    g.add_argument("--base", default=None, help="base model (default: the adapter's)")
    g.add_argument("--prompt", default="Two things are infinite: ")
    g.add_argument("--max-new-tokens", type=int, default=40)
    g.add_argument("--temperature", type=float, default=0.0)
    p = sub.add_parser("push", help="push a finished run's adapter to the Hugging Face Hub (token: HF_TOKEN)")
    p.add_argument("run_dir", help="a run folder or an adapter folder")
    p.add_argument("--repo", default=None, help="owner/name (default: <you>/<base-name>-lora-<data-name>)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--base-model", default=None, help="the base model's Hub id, if the run used a local folder")
    m = sub.add_parser("merge", help="merge a run's adapter into its base model (RUN_DIR/merged), verified")
    m.add_argument("run_dir")
    m.add_argument(
        "--dtype", default=None, help="bfloat16, float16 or float32 (default: float32 on CPU, bfloat16 on a GPU)"
    )
    m.add_argument("--push", default=None, metavar="OWNER/NAME", help="then push the verified merge to this repo")
    m.add_argument("--private", action="store_true")
    d = sub.add_parser("data", help="show the exact training tokens of a file's first rows (no loss: [[...]])")
    d.add_argument("file")
    d.add_argument("--show", type=_positive, default=5, metavar="N", help="rows to show (default 5)")
    d.add_argument(
        "--layout", default="auto", choices=("auto", "text", "prompt_completion", "instruction", "conversation")
    )
    d.add_argument("--text-column", default=None)
    d.add_argument("--base", default=None, help="the base model whose tokenizer is used (default: the bundled one)")
    d.add_argument("--max-length", type=_positive, default=None, help="tokens per row (default: training's max_length)")
    d.add_argument("--train-on-prompt", action="store_true", help="loss on every token")
    a = ap.parse_args(argv)

    if a.cmd == "serve":
        from .public_repos import mark_shared
        from .ui import CSS, build_app

        mark_shared(a.host, a.share)  # others can reach it: offline, the Hub cache serves them public repos only
        build_app().queue(default_concurrency_limit=4).launch(
            server_name=a.host, server_port=a.port, share=a.share, css=CSS
        )
        return 0
    if a.cmd == "train":
        if a.settings:
            from .config import settings_help

            print(settings_help())
            return 0
        if a.run_dir and not a.config:
            from .train import train

            return train(a.run_dir, resume=a.resume)
        return _train_config(a)
    if a.cmd == "generate":
        from .config import ConfigError
        from .generate import Generator, is_adapter_folder

        adapter = a.adapter
        if adapter and not is_adapter_folder(adapter) and is_adapter_folder(Path(adapter) / "adapter"):
            adapter = str(Path(adapter) / "adapter")  # a run folder was given
        try:
            text = ""
            for text in Generator().stream(  # noqa: B007 (the last streamed text is the answer)
                a.prompt, adapter=adapter, base=a.base, max_new_tokens=a.max_new_tokens, temperature=a.temperature
            ):
                pass
        except ConfigError as err:
            print("Cannot generate:\n" + "\n".join(f"  - {p}" for p in err.problems), file=sys.stderr)
            return 2
        print(text)
        return 0
    if a.cmd == "push":
        return _push(a)
    if a.cmd == "merge":
        return _merge(a)
    if a.cmd == "data":
        return _data(a)
    return 2


def _positive(text: str) -> int:
    """argparse's type for a count of at least 1 (``--show -3`` showed the last 3 rows; 0, nothing)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is below 1: give a count of at least 1")
    return n


def _data(a) -> int:
    """``data --show N FILE``: the lint (lora_app.lint) as plain text; the tokenizer only is loaded."""
    from . import models
    from .config import ConfigError, DataConfig, ModelConfig, TrainingSettings
    from .data import load_text
    from .lint import lint, plain

    try:
        cfg = DataConfig(path=a.file, layout=a.layout, text_column=a.text_column, train_on_prompt=a.train_on_prompt)
        td = load_text(cfg)
        base = a.base or ModelConfig().base_model_name_or_path
        tok = models.load_tokenizer(models.resolve_model(base).load_path)
        print(plain(lint(td, tok, a.max_length or TrainingSettings().max_length, a.show, a.train_on_prompt)))
    except ConfigError as err:
        print("Cannot read the data:\n" + "\n".join(f"  - {p}" for p in err.problems), file=sys.stderr)
        return 2
    except ValueError as err:  # pydantic: a bad --layout
        print(f"Cannot read the data: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


def _merge(a) -> int:
    from . import hub_client
    from .config import ConfigError
    from .merge import merge_run, push_merged

    token = hub_client.env_token()
    say = lambda line: print(line, flush=True)  # noqa: E731
    try:
        res = merge_run(a.run_dir, dtype=a.dtype, progress=say, token=token)
    except ConfigError as err:
        print("The merge did not happen:\n" + "\n".join(f"  - {p}" for p in err.problems), file=sys.stderr)
        return 2  # an input problem, as generate and train say it
    print(res.markdown().replace("**", "").replace("`", ""))
    if not res.ok:
        return 1
    if a.push:
        try:
            out = push_merged(a.run_dir, a.push, private=a.private, token=token, progress=say)
        except ConfigError as err:
            print(
                "The push did not happen (the merged folder is unchanged):\n"
                + "\n".join(f"  - {p}" for p in err.problems),
                file=sys.stderr,
            )
            return 1
        print(f"pushed to {out.url}")
    return 0


def _push(a) -> int:
    from . import hub, hub_client
    from .config import ConfigError
    from .repo_id import on_disk

    if not on_disk(a.run_dir, "dir"):  # said before the login is checked: the login is not the problem
        print(
            f"The push did not happen: '{a.run_dir}' is not a folder. Fix: give a run or adapter folder.",
            file=sys.stderr,
        )
        return 2
    token = hub_client.env_token()
    try:
        repo = a.repo or hub.default_repo_id(hub_client.whoami(token).name, a.run_dir)
        res = hub.push_adapter(a.run_dir, repo, private=a.private, token=token, base_model_id=a.base_model)
    except ConfigError as err:
        print(
            "The push did not happen (the local adapter is unchanged):\n" + "\n".join(f"  - {p}" for p in err.problems),
            file=sys.stderr,
        )
        return 1
    print(f"pushed to {res.url}" + ("" if not res.notes else "\n" + "\n".join(res.notes)))
    return 0


def _train_launched(raw: dict, runs_root: Path, token: str | None = None) -> int:
    """``python -m lora_app train --config FILE`` started by ``accelerate launch``/torchrun (every
    rank runs it): rank 0 runs the preflight and makes the run folder under ``runs_root`` (with
    ``distributed.num_processes`` = the launcher's world size), every rank gets its path from rank 0
    (accelerate's ``broadcast_object_list``; on several machines ``runs_root`` must be on a shared
    filesystem), then every rank trains it. Returns the exit code: 2 (on every rank) when the
    config has problems, which rank 0 prints; else :func:`lora_app.train.train`'s."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from .config import ConfigError
    from .run_folder import create_folder, new_run_id
    from .validate import preflight

    cuda = torch.cuda.is_available()
    state = PartialState(cpu=not cuda, **({} if cuda else {"backend": "gloo"}))
    box: list = [None]
    if state.is_main_process:
        dist = raw.get("distributed")
        raw = {**raw, "distributed": {**(dist if isinstance(dist, dict) else {}), "num_processes": state.num_processes}}
        try:
            cfg, pre = preflight(raw, token=token)
            runs_root.mkdir(parents=True, exist_ok=True)
            run_id = new_run_id()
            create_folder(runs_root, run_id, cfg)
            box = [{"run_dir": str(runs_root / run_id), "notes": pre.notes}]
        except ConfigError as err:
            box = [{"problems": err.problems}]
    broadcast_object_list(box)
    msg = box[0]
    if "problems" in msg:
        if state.is_main_process:
            print("The configuration has problems:\n" + "\n".join(f"  - {p}" for p in msg["problems"]), file=sys.stderr)
        return 2
    if state.is_main_process:
        for note in msg["notes"]:
            print(f"note: {note}")
        print(f"run folder {msg['run_dir']} ({state.num_processes} processes)", flush=True)
    from .train import train

    code = train(msg["run_dir"])
    if state.is_main_process:
        from .events import RunView

        view = RunView()
        view.update(msg["run_dir"])
        print("\n".join(view.lines))
    return code


def _print_commands(raw: dict, path: str, sets: list[str], runs: str | None) -> int:
    from .config import ConfigError, RunConfig
    from .launch import user_commands

    try:
        cfg = RunConfig.build(raw)
    except ConfigError as err:
        print("The configuration has problems:\n" + "\n".join(f"  - {p}" for p in err.problems), file=sys.stderr)
        return 2
    c = user_commands(cfg, path, sets, runs)
    print(f"# one GPU or a CPU\n{c['single']}\n# one machine, several GPUs\n{c['multi_gpu']}")
    print(f"# several machines: once on each (MACHINE_RANK 0, 1, ...; MASTER_ADDR = machine 0)\n{c['multi_node']}")
    return 0


def _with_overrides(raw: dict, pairs: list[str]) -> dict:
    """``raw`` (a nested config dict, changed in place and returned) with ``--set`` ``pairs`` on top.
    A ``--set`` of warmup_steps without warmup_ratio means those steps, as in a config file
    (lora_app.presets.layered): a saved config.yaml carries the default ratio, which would
    otherwise win and silently ignore the override. Raises ConfigError for a malformed pair."""
    from .presets import layered

    for sec, vals in _overrides(pairs).items():
        raw[sec] = layered(raw[sec] if isinstance(raw.get(sec), dict) else {}, vals)
    return raw


def _train_config(a) -> int:
    from . import app_home
    from .config import ConfigError
    from .events import RunView
    from .hub_client import env_token
    from .identity import LOCAL  # the CLI on this machine: a trusted local caller
    from .jobs import JobManager
    from .validate import check_and_submit

    if not a.config and not a.preset:
        print("train: give RUN_DIR, --config FILE or --preset NAME", file=sys.stderr)
        return 2
    try:
        raw = _load_raw(a.config) if a.config else {}
        if a.preset is not None:  # the command line's preset wins over one named in the file
            raw["preset"] = a.preset
        raw = _with_overrides(raw, a.set or [])
    except ConfigError as err:
        print("The configuration has problems:\n" + "\n".join(f"  - {p}" for p in err.problems), file=sys.stderr)
        return 2
    from . import launch

    if a.print_commands:
        return _print_commands(raw, a.config, a.set or [], a.runs)
    if launch.world_size() > 1:  # started by accelerate launch / torchrun: this process is one rank
        return _train_launched(raw, Path(a.runs) if a.runs else app_home() / "runs", env_token())
    made: list[JobManager] = []

    def manager() -> JobManager:  # made only once the preflight passed: a refused config writes nothing
        made.append(JobManager(a.runs or app_home() / "runs"))
        return made[0]

    try:
        # What the Start button does: preflight (every problem at once), then queue.
        run_id, pre = check_and_submit(manager, raw, owner=LOCAL.owner or "cli", token=env_token())
    except ConfigError as err:
        print("The configuration has problems:\n" + "\n".join(f"  - {p}" for p in err.problems), file=sys.stderr)
        return 2
    jm = made[0]
    for note in pre.notes:
        print(f"note: {note}")
    print(f"run {run_id}: {jm.run_dir(run_id)}")
    view = RunView()
    try:
        while True:
            view.update(jm.run_dir(run_id))
            for line in view.lines:
                print(line)
            view.lines.clear()
            info = jm.get(run_id)
            if info is None or info.status not in ("queued", "running"):
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        print(jm.cancel(run_id))
    view.update(jm.run_dir(run_id))
    print("\n".join(view.lines))
    info = jm.get(run_id)
    if info is None:  # (the run was just submitted: only a removed run folder gets here)
        print(f"run {run_id}: gone", file=sys.stderr)
        return 1
    print(f"{info.status}: {info.message}")
    return 0 if info.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
