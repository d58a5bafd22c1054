"""Spec text for the paper's generated ensembles (V25, V100): VGG-16 variants.

>>> text = vgg16_variants(3)
>>> text.count("net ")
3

Variant i changes one of VGG-16's 13 conv layers (layer i mod 13) in one of three ways,
as in the paper's Table 2: (i) more filters, (ii) a larger kernel, (iii) both. Past the
first 39 variants the changes grow (more filters, kernel 7), so every variant is distinct.
"""

from __future__ import annotations

VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16_variant(i: int) -> list[list[tuple[int, int]]]:
    """Blocks of (kernel, filters) for the i-th variant (0-based)."""
    blocks = [[(3, f) for f in b] for b in VGG16]
    flat = [(b, j) for b, blk in enumerate(blocks) for j in range(len(blk))]
    b, j = flat[i % 13]
    mode = i % 3
    level = i // 39
    kernel, filters = blocks[b][j]
    if mode in (0, 2):
        filters = filters + filters // 2 * (level + 1)
    if mode in (1, 2):
        kernel = 5 + 2 * level
    blocks[b][j] = (kernel, filters)
    return blocks


def _layers(block: list[tuple[int, int]]) -> str:
    out: list[str] = []
    i = 0
    while i < len(block):
        j = i
        while j + 1 < len(block) and block[j + 1] == block[i]:
            j += 1
        out.append(f"{block[i][0]}:{block[i][1]}" + (f" x{j - i + 1}" if j > i else ""))
        i = j + 1
    return " ".join(out)


def vgg16_variants(n: int, name: str | None = None, data: str = "cifar10") -> str:
    """A spec of n distinct VGG-16 variants on CIFAR-10-shaped input."""
    lines = [
        f"# {n} variants of VGG-16, each changing one layer's filters, kernel or both",
        "# (the paper's V25/V100). Made by mncompile.zoo.vgg16_variants.",
        f"ensemble {name or f'v{n}'} {{",
        "  input 3x32x32",
        "  classes 10",
        f"  data {data}",
    ]
    for i in range(n):
        lines.append("")
        lines.append(f"  net vgg16_v{i + 1:03d} plain {{")
        for block in vgg16_variant(i):
            lines.append(f"    block {{ {_layers(block)} }}")
        lines.append("    dense 512")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(vgg16_variants(int(sys.argv[1]) if len(sys.argv) > 1 else 25), end="")
