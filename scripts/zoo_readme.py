"""Writes the generated tables into models/README.md, between their markers (the zoo table in
place of ZOO_TABLE the first time), so the tables always come from the cards."""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.models.zoo import DEFAULT_MODELS_DIR, datasets_markdown, zoo_markdown  # noqa: E402

TABLES = {
    "zoo table: python -m core models table": zoo_markdown,
    "default verdict per dataset: from models/ensemble.json": datasets_markdown,
}


def main() -> None:
    readme = Path(DEFAULT_MODELS_DIR) / "README.md"
    text = readme.read_text(encoding="utf-8")
    for title, make in TABLES.items():
        start, end = f"<!-- {title} -->", f"<!-- end of {title.split(':')[0]} -->"
        block = f"{start}\n{make(DEFAULT_MODELS_DIR)}\n{end}"
        if start in text:
            text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text,
                          flags=re.S)
        elif title.startswith("zoo table"):
            text = text.replace("ZOO_TABLE", block)
    readme.write_text(text, encoding="utf-8")
    print(f"wrote the tables into {readme}")


if __name__ == "__main__":
    main()
