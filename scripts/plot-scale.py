#!/usr/bin/env python3
"""Draws the scaling curves of `tunnel_load --scale` as one SVG.

    python3 scripts/plot-scale.py SCALE.csv docs/scaling.svg ["caption line\\nnext line"]

SCALE.csv is what the harness writes (`--scale-out`): rows of
`curve,series,x,metric,value`. Standard library only; x axes are
logarithmic (the sizes grow by 10-16x), y axes linear from 0 unless a
panel says otherwise.
"""

from __future__ import annotations

import csv
import math
import sys
from collections import defaultdict

W, H = 460, 300  # one panel
COLS = 2
ML, MR, MT, MB = 64, 16, 40, 46  # margins inside a panel
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
DASHES = ["", "6,3", "2,3", "8,3,2,3"]


def esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= m * e:
            return m * e
    return 10 * e


def fmt(v: float) -> str:
    if v >= 10000:
        return f"{v / 1000:.0f}k"
    if v >= 1000:
        return f"{v / 1000:.1f}k".replace(".0k", "k")
    if v >= 10 or v == 0:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_x(v: float) -> str:
    return f"{v:,.0f}" if v == int(v) else f"{v:g}"


def legend_corner(boxes, pts, lw, lh, area):
    """The corner of `area` (x0, y0, x1, y1) whose legend box of lw x lh
    covers the fewest plotted points / bar rectangles."""
    x0, y0, x1, y1 = area
    best = None
    for cx, cy in ((x0 + 8, y0 + 6), (x1 - lw - 8, y0 + 6), (x0 + 8, y1 - lh - 6), (x1 - lw - 8, y1 - lh - 6)):
        hit = sum(1 for x, y in pts if cx - 4 <= x <= cx + lw + 4 and cy - 4 <= y <= cy + lh + 4)
        hit += sum(
            1
            for bx0, by0, bx1, by1 in boxes
            if not (bx1 < cx or bx0 > cx + lw or by1 < cy or by0 > cy + lh)
        )
        if best is None or hit < best[0]:
            best = (hit, cx, cy)
    return best[1], best[2]


def line_panel(out, ox, oy, title, ylabel, xlabel, series, logy=False):
    """series: list of (label, [(x, y), ...])."""
    pts = [(x, y) for _, s in series for x, y in s if x > 0 and math.isfinite(y)]
    out.append(f'<text x="{ox + W / 2}" y="{oy + 22}" class="t">{esc(title)}</text>')
    if not pts:
        out.append(f'<text x="{ox + W / 2}" y="{oy + H / 2}" class="l">no data</text>')
        return
    xs = sorted({x for x, _ in pts})
    lx0, lx1 = math.log10(xs[0]), math.log10(xs[-1])
    if lx1 - lx0 < 1e-9:
        lx0, lx1 = lx0 - 0.5, lx1 + 0.5
    pad = (lx1 - lx0) * 0.06
    lx0, lx1 = lx0 - pad, lx1 + pad
    ys = [y for _, y in pts]
    if logy:
        lo = 10 ** math.floor(math.log10(max(min(ys), 1e-3)))
        hi = 10 ** math.ceil(math.log10(max(ys)))
        ty = lambda y: (math.log10(max(y, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        yticks = []
        t = lo
        while t <= hi * 1.0001:
            yticks.append(t)
            t *= 10
    else:
        hi = nice_max(max(ys) * (1.1 + 0.1 * len(series)))  # headroom for the legend
        ty = lambda y: y / hi
        yticks = [hi * i / 5 for i in range(6)]
    pw, ph = W - ML - MR, H - MT - MB
    px = lambda x: ox + ML + (math.log10(x) - lx0) / (lx1 - lx0) * pw
    py = lambda y: oy + MT + ph - ty(y) * ph
    out.append(f'<rect x="{ox + ML}" y="{oy + MT}" width="{pw}" height="{ph}" class="f"/>')
    for t in yticks:
        y = py(t)
        out.append(f'<line x1="{ox + ML}" x2="{ox + ML + pw}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>')
        out.append(f'<text x="{ox + ML - 6}" y="{y + 4:.1f}" class="yl">{fmt(t)}</text>')
    for x in xs:
        X = px(x)
        out.append(f'<line x1="{X:.1f}" x2="{X:.1f}" y1="{oy + MT}" y2="{oy + MT + ph}" class="g"/>')
        out.append(f'<text x="{X:.1f}" y="{oy + MT + ph + 16}" class="xl">{fmt_x(x)}</text>')
    out.append(f'<text x="{ox + ML + pw / 2}" y="{oy + H - 8}" class="l">{esc(xlabel)}</text>')
    out.append(
        f'<text transform="translate({ox + 14},{oy + MT + ph / 2}) rotate(-90)" class="l">{esc(ylabel)}</text>'
    )
    drawn, screen = [], []
    for i, (label, s) in enumerate(series):
        s = sorted((x, y) for x, y in s if x > 0 and math.isfinite(y))
        if not s:
            continue
        c = COLORS[i % len(COLORS)]
        d = DASHES[(i // 2) % len(DASHES)] if len(series) > 2 else ""
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s)
        dash = f' stroke-dasharray="{d}"' if d else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for x, y in s:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>')
        # Points along the segments too, so a legend avoids the lines.
        for (xa, ya), (xb, yb) in zip(s, s[1:]):
            for k in range(11):
                t = k / 10
                screen.append((px(xa) + (px(xb) - px(xa)) * t, py(ya) + (py(yb) - py(ya)) * t))
        screen += [(px(x), py(y)) for x, y in s]
        drawn.append((label, c, dash))
    lw = 24 + 6.2 * max((len(l) for l, _, _ in drawn), default=0)
    lh = 15 * len(drawn)
    lx, ly0 = legend_corner([], screen, lw, lh, (ox + ML, oy + MT, ox + ML + pw, oy + MT + ph))
    out.append(f'<rect x="{lx - 4:.1f}" y="{ly0 - 2:.1f}" width="{lw + 8:.1f}" height="{lh + 4}" fill="white" fill-opacity="0.85"/>')
    for i, (label, c, dash) in enumerate(drawn):
        ly = ly0 + 11 + 15 * i
        out.append(f'<line x1="{lx:.1f}" x2="{lx + 18:.1f}" y1="{ly - 4:.1f}" y2="{ly - 4:.1f}" stroke="{c}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 24:.1f}" y="{ly:.1f}" class="lg">{esc(label)}</text>')


def bar_panel(out, ox, oy, title, ylabel, groups, bars):
    """groups: list of (group label, [value per bar]); bars: bar labels."""
    out.append(f'<text x="{ox + W / 2}" y="{oy + 22}" class="t">{esc(title)}</text>')
    vals = [v for _, vs in groups for v in vs if math.isfinite(v)]
    if not vals:
        out.append(f'<text x="{ox + W / 2}" y="{oy + H / 2}" class="l">no data</text>')
        return
    hi = nice_max(max(vals) * 1.05)
    pw, ph = W - ML - MR, H - MT - MB
    py = lambda y: oy + MT + ph - y / hi * ph
    out.append(f'<rect x="{ox + ML}" y="{oy + MT}" width="{pw}" height="{ph}" class="f"/>')
    for i in range(6):
        t = hi * i / 5
        y = py(t)
        out.append(f'<line x1="{ox + ML}" x2="{ox + ML + pw}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>')
        out.append(f'<text x="{ox + ML - 6}" y="{y + 4:.1f}" class="yl">{fmt(t)}</text>')
    boxes = []
    gw = pw / max(len(groups), 1)
    bw = gw * 0.7 / max(len(bars), 1)
    for g, (label, vs) in enumerate(groups):
        gx = ox + ML + g * gw + gw * 0.15
        for b, v in enumerate(vs):
            if not math.isfinite(v):
                continue
            c = COLORS[b % len(COLORS)]
            y = py(v)
            out.append(
                f'<rect x="{gx + b * bw:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{oy + MT + ph - y:.1f}" fill="{c}"/>'
            )
            boxes.append((gx + b * bw, y - 14, gx + (b + 1) * bw, oy + MT + ph))
            out.append(f'<text x="{gx + b * bw + bw / 2 - 1:.1f}" y="{y - 3:.1f}" class="v">{fmt(v)}</text>')
        out.append(f'<text x="{gx + gw * 0.35:.1f}" y="{oy + MT + ph + 16}" class="xl">{esc(label)}</text>')
    lw, lh = 60, 15 * len(bars)
    lx, ly0 = legend_corner(boxes, [], lw, lh, (ox + ML, oy + MT, ox + ML + pw, oy + MT + ph))
    for b, label in enumerate(bars):
        ly = ly0 + 11 + 15 * b
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="10" fill="{COLORS[b % len(COLORS)]}"/>')
        out.append(f'<text x="{lx + 18}" y="{ly}" class="lg">{esc(label)}</text>')
    out.append(
        f'<text transform="translate({ox + 14},{oy + MT + ph / 2}) rotate(-90)" class="l">{esc(ylabel)}</text>'
    )


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    data: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    with open(sys.argv[1], newline="") as f:
        for r in csv.DictReader(f):
            try:
                x, v = float(r["x"]), float(r["value"])
            except (KeyError, ValueError):
                continue
            data[(r["curve"], r["series"], r["metric"])].append((x, v))
    g = lambda c, s, m: data.get((c, s, m), [])
    panels = []
    panels.append(("line", "Keep-alive req/s through one tunnel", "req/s", "concurrent connections",
                   [("A axum::serve(tunnel)", g("rps", "A", "req_s")),
                    ("C direct TLS", g("rps", "C", "req_s"))], False))
    panels.append(("line", "Keep-alive latency", "ms (log)", "concurrent connections",
                   [("A p99", g("rps", "A", "p99_ms")), ("C p99", g("rps", "C", "p99_ms")),
                    ("A p50", g("rps", "A", "p50_ms")), ("C p50", g("rps", "C", "p50_ms"))], True))
    panels.append(("line", "CPU per 10k keep-alive requests", "CPU s / 10k", "concurrent connections",
                   [("A SDK server", g("rps", "A", "cpu_server_10k")),
                    ("A engine", g("rps", "A", "cpu_engine_10k")),
                    ("C server", g("rps", "C", "cpu_server_10k"))], False))
    panels.append(("line", "RSS per idle proxied connection", "KiB / connection", "idle connections",
                   [("SDK (raw streams held)", g("idle", "SDK", "kib_per_conn")),
                    ("engine", g("idle", "engine", "kib_per_conn"))], False))
    panels.append(("line", "Time to create, one after the other", "ms each (mean)", "tunnels / control channels",
                   [("tunnels on one control channel", g("tunnels", "create", "ms_each")),
                    ("control channels on one engine", g("clients", "create", "ms_each"))], False))
    panels.append(("line", "RSS per tunnel / per control channel", "KiB each", "tunnels / control channels",
                   [("per tunnel, SDK", g("tunnels", "SDK", "kib_each")),
                    ("per tunnel, engine", g("tunnels", "engine", "kib_each")),
                    ("per control channel, SDK", g("clients", "SDK", "kib_each")),
                    ("per control channel, engine", g("clients", "engine", "kib_each"))], False))
    dial_series = []
    for key in data:
        if key[0] == "dial" and key[1] not in dial_series:
            dial_series.append(key[1])
    groups = []
    for s in dial_series:
        v = lambda m: (g("dial", s, m) or [(0, float("nan"))])[0][1]
        groups.append((s, [v("rtt_p50_ms"), v("rtt_p99_ms")]))
    panels.append(("bar", "Dial setup: dial to first echoed byte", "ms", groups, ["p50", "p99"]))
    caption = [line for arg in sys.argv[3:] for line in arg.split("\\n")]
    rows = (len(panels) + (1 if caption else 0) + COLS - 1) // COLS
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * COLS}" height="{H * rows}" '
        f'viewBox="0 0 {W * COLS} {H * rows}" font-family="sans-serif">',
        "<style>.t{font-size:14px;font-weight:bold;text-anchor:middle}"
        ".l{font-size:12px;text-anchor:middle;fill:#333}.xl{font-size:11px;text-anchor:middle;fill:#333}"
        ".yl{font-size:11px;text-anchor:end;fill:#333}.lg{font-size:11px;fill:#222}"
        ".v{font-size:10px;text-anchor:middle;fill:#222}.g{stroke:#ddd;stroke-width:1}"
        ".f{fill:#fafafa;stroke:#999}</style>",
        f'<rect width="{W * COLS}" height="{H * rows}" fill="white"/>',
    ]
    for i, p in enumerate(panels):
        ox, oy = (i % COLS) * W, (i // COLS) * H
        if p[0] == "line":
            _, title, ylabel, xlabel, series, logy = p
            line_panel(out, ox, oy, title, ylabel, xlabel, series, logy)
        else:
            _, title, ylabel, groups, bars = p
            bar_panel(out, ox, oy, title, ylabel, groups, bars)
    if caption:
        i = len(panels)
        ox, oy = (i % COLS) * W, (i // COLS) * H
        for k, line in enumerate(caption):
            out.append(f'<text x="{ox + 30}" y="{oy + MT + 10 + 18 * k}" class="lg">{esc(line)}</text>')
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
