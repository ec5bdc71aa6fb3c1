"""Extract the workbook's corpus: the docstrings of CPython's standard library.

Run once (``python data/corpus/extract.py``) with the Python named in ``manifest.json``; the
output is committed, so nobody needs to run this again. It parses every ``.py`` file of the
standard library with ``ast`` (no module is imported or executed), keeps module, class and
function docstrings longer than 40 characters, and writes one document per docstring:
a line with the dotted name, the cleaned docstring, then a blank line.

License: the Python standard library, docstrings included, is distributed under the PSF
License Agreement (PSF-2.0); its text is copied beside the corpus as ``LICENSE-PSF.txt``.

A second, smaller file is the *downstream* task of notebook 01 (transfer learning): the first
300,000 characters of NumPy's docstrings (numpydoc style: "Parameters / Returns / Examples"
sections), extracted the same way from the installed ``numpy`` wheel (BSD-3-Clause, license
copied as ``LICENSE-NUMPY.txt``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import platform
import shutil
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "python_stdlib_docstrings.txt"
SKIP = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__",
        "ensurepip", "pydoc_data"}
MIN_CHARS = 40
DOWNSTREAM = HERE / "numpy_docstrings.txt"
DOWNSTREAM_CHARS = 300_000
NUMPY_SKIP = {"tests", "testing", "_pyinstaller", "f2py", "distutils", "typing"}


def _files(lib: Path) -> list[Path]:
    def keep(path: Path) -> bool:
        parts = path.relative_to(lib).parts
        return not any(p in SKIP or p.startswith("test") for p in parts)

    return sorted(p for p in lib.rglob("*.py") if keep(p))


def _documents(path: Path, lib: Path) -> list[str]:
    module = ".".join(path.relative_to(lib).with_suffix("").parts).removesuffix(".__init__")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return []
    docs = []
    stack: list[tuple[ast.AST, str]] = [(tree, module)]
    while stack:  # depth-first, in source order, so the text is stable between runs
        node, name = stack.pop(0)
        doc = ast.get_docstring(node)
        if doc and len(doc) >= MIN_CHARS:
            docs.append(f"{name}\n{doc.strip()}\n")
        children = [(c, f"{name}.{c.name}") for c in ast.iter_child_nodes(node)
                    if isinstance(c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        stack[0:0] = children
    return docs


def _describe(path: Path, source: str, license_: str, n_docs: int) -> dict:
    data = path.read_bytes()
    return {"file": path.name, "source": source, "license": license_, "n_documents": n_docs,
            "n_chars": len(data.decode("utf-8")), "n_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def extract_numpy() -> dict:
    import numpy

    package = Path(numpy.__file__).resolve().parent
    files = [p for p in sorted(package.rglob("*.py"))
             if not NUMPY_SKIP & set(p.relative_to(package).parts)]
    docs, total = [], 0
    for doc in (d for path in files for d in _documents(path, package.parent)):
        if total + len(doc) > DOWNSTREAM_CHARS:
            break
        docs.append(doc)
        total += len(doc) + 1
    DOWNSTREAM.write_text("\n".join(docs), encoding="utf-8")
    dist = next(package.parent.glob(f"numpy-{numpy.__version__}.dist-info"))
    shutil.copyfile(dist / "licenses" / "LICENSE.txt", HERE / "LICENSE-NUMPY.txt")
    return _describe(DOWNSTREAM, f"docstrings of NumPy {numpy.__version__} (first "
                     f"{DOWNSTREAM_CHARS:,} characters), extracted with data/corpus/extract.py",
                     "BSD-3-Clause (NumPy); see LICENSE-NUMPY.txt", len(docs))


def main() -> None:
    lib = Path(sysconfig.get_paths()["stdlib"])
    docs = [d for path in _files(lib) for d in _documents(path, lib)]
    text = "\n".join(docs)
    OUT.write_text(text, encoding="utf-8")
    shutil.copyfile(lib / "LICENSE.txt", HERE / "LICENSE-PSF.txt")
    data = OUT.read_bytes()
    manifest = {
        "file": OUT.name,
        "source": f"docstrings of the CPython {platform.python_version()} standard library, "
                  "extracted with data/corpus/extract.py (ast, nothing imported)",
        "license": "PSF-2.0 (Python Software Foundation License Agreement); see LICENSE-PSF.txt",
        "n_documents": len(docs),
        "n_chars": len(text),
        "n_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "downstream": extract_numpy(),
    }
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
