"""The canonical text form of a spec: `mncompile fmt`.

>>> from mncompile.parse import parse_text
>>> print(format_ensemble(parse_text("ensemble e{input 40;classes 10;net a mlp{dense 8 8}}")), end="")
ensemble e {
  input 40
  classes 10
<BLANKLINE>
  net a mlp {
    dense 8 8
  }
}

Consecutive identical layers fold into a repeat (`3:64 x2`); training settings keep only the
keys the spec sets, in the documented order. Comments are not kept. Parsing the output gives
the same IR as parsing the input (spans aside).
"""

from __future__ import annotations

from mncompile.ir import INT_KEYS, Block, Ensemble, Layer, Net


def format_number(key: str, value: float | int | str) -> str:
    """A setting's value as the shortest text that parses back to the same number."""
    if isinstance(value, str):
        return value
    if key in INT_KEYS or (isinstance(value, int) and not isinstance(value, bool)):
        return str(int(value))
    return repr(float(value))


def format_layers(layers: tuple[Layer, ...]) -> str:
    """Layers with runs of identical ones folded: `3:64 x2 3:128`."""
    out: list[str] = []
    i = 0
    while i < len(layers):
        j = i
        while j + 1 < len(layers) and (layers[j + 1].kernel, layers[j + 1].filters) == (
            layers[i].kernel,
            layers[i].filters,
        ):
            j += 1
        text = f"{layers[i].kernel}:{layers[i].filters}"
        out.append(text + (f" x{j - i + 1}" if j > i else ""))
        i = j + 1
    return " ".join(out)


def format_block(block: Block) -> str:
    return "block { " + format_layers(block.layers) + " }"


def format_net(net: Net, indent: str = "  ") -> str:
    """One `net` item, its parts on their own lines."""
    lines = [f"{indent}net {net.name} {net.family} {{"]
    if net.stem is not None:
        lines.append(f"{indent}  stem {net.stem.kernel}:{net.stem.filters}")
    lines.extend(f"{indent}  {format_block(b)}" for b in net.blocks)
    if net.dense:
        lines.append(f"{indent}  dense " + " ".join(str(w) for w in net.widths))
    lines.append(f"{indent}}}")
    return "\n".join(lines)


def format_ensemble(e: Ensemble) -> str:
    """The canonical text of a whole spec, ending with a newline."""
    lines = [f"ensemble {e.name} {{", "  input " + "x".join(map(str, e.input)),
             f"  classes {e.classes}"]
    if e.data is not None:
        lines.append(f"  data {e.data}")
    if e.train:
        lines.append("")
        lines.append("  train {")
        lines.extend(f"    {s.key} {format_number(s.key, s.value)}" for s in e.train)
        lines.append("  }")
    for net in e.nets:
        lines.append("")
        lines.append(format_net(net))
    lines.append("}")
    return "\n".join(lines) + "\n"
