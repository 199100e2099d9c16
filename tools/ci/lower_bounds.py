"""Prints pip constraints holding each runtime requirement of settings.ini at its lower bound (`name>=X` -> `name==X`).

`requirements` and every `<extra>_requirements` line except dev's are read. tools/ci/dev.sh installs the oldest
Python's dev venv with these (PIP_CONSTRAINT), so the lower bounds the package declares are versions CI tests.
    python tools/ci/lower_bounds.py > lower-bounds.txt
"""

import re, shlex
from configparser import ConfigParser
from pathlib import Path

cfg = ConfigParser(delimiters=["="])
cfg.read(Path(__file__).resolve().parents[2] / "settings.ini", encoding="utf-8")
d = cfg["DEFAULT"]
names = ["requirements"] + [
    k
    for k in d
    if k.endswith("_requirements")
    and k not in ("requirements", "dev_requirements", "pip_requirements", "conda_requirements")
]
pins = {}
for key in names:
    for req in shlex.split(d.get(key, "")):
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([0-9][A-Za-z0-9.]*)", req.replace(" ", ""))
        if m:
            pins[m[1].lower()] = m[2]
for name, version in sorted(pins.items()):
    print(f"{name}=={version}")
