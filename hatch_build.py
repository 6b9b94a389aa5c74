"""Compile the Babel catalogues into .mo files before a wheel is built.

The .mo files are build output, not committed; `pip install .` (editable or not) gets them.
"""

from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def compile_catalogues(root: Path) -> None:
    for po_path in root.glob("translations/*/LC_MESSAGES/*.po"):
        with po_path.open("rb") as po_file:
            catalogue = read_po(po_file)
        with po_path.with_suffix(".mo").open("wb") as mo_file:
            write_mo(mo_file, catalogue)


class CompileTranslations(BuildHookInterface):
    def initialize(self, version, build_data):
        compile_catalogues(Path(self.root))
