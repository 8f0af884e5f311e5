"""Writes the generated zoo table into models/README.md, between its markers (or in place of
ZOO_TABLE), so the table always comes from the cards."""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.zoo import DEFAULT_MODELS_DIR, zoo_markdown  # noqa: E402

START, END = "<!-- zoo table: python -m core models table -->", "<!-- end of zoo table -->"


def main() -> None:
    readme = Path(DEFAULT_MODELS_DIR) / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = f"{START}\n{zoo_markdown(DEFAULT_MODELS_DIR)}\n{END}"
    if START in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text,
                      flags=re.S)
    else:
        text = text.replace("ZOO_TABLE", block)
    readme.write_text(text, encoding="utf-8")
    print(f"wrote the zoo table into {readme}")


if __name__ == "__main__":
    main()
