"""The repository is a Space: README front matter, requirements and .env.example agree."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def front_matter() -> dict:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert m, "README.md must start with the Space's YAML front matter"
    return yaml.safe_load(m.group(1))


def test_front_matter_matches_the_pins_and_the_app():
    fm = front_matter()
    pins = dict(
        re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s;#]+)", (REPO / "requirements.txt").read_text(), re.M)
    )
    assert fm["sdk"] == "gradio" and fm["sdk_version"] == pins["gradio"]
    assert (REPO / fm["app_file"]).is_file()
    assert fm["hf_oauth"] is True
    # push needs write-repos, creating the repo manage-repos, private data/adapters read-repos
    assert {"read-repos", "write-repos", "manage-repos"} <= set(fm["hf_oauth_scopes"])
    assert not {"openid", "profile"} & set(fm["hf_oauth_scopes"])  # always granted; listing them is an error
    assert fm["suggested_hardware"] in {
        "cpu-basic",
        "cpu-upgrade",
        "t4-small",
        "t4-medium",
        "l4x1",
        "a10g-small",
        "a10g-large",
        "a100-large",
    }


def test_env_example_lists_every_variable_the_app_reads():
    names = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.M))
    code = "\n".join(p.read_text(encoding="utf-8") for p in [REPO / "app.py", *(REPO / "lora_app").rglob("*.py")])
    read = set(re.findall(r"os\.environ(?:\.get)?[\(\[]\"((?:HF_|LORA_APP_|GRADIO_|ADMIN_)[A-Z0-9_]*)\"", code))
    assert "HF_TOKEN" in names and read, read
    assert read - names == set(), f"read by the app but missing from .env.example: {sorted(read - names)}"
