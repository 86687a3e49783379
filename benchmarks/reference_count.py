"""Plain-Python reference of the counting core, written from the algorithm's description.

It shares no code with :mod:`trichoscan.counting`: only the skeleton itself comes from
:func:`skimage.morphology.skeletonize` (step 1 of the description); everything after it —
distances, graph, merging, pruning, pairing, chains, smoothing, tips, pixel assignment,
widths, units, bundles — is loops over Python lists, sets and dicts. It is slow (seconds for
a 100 x 100 mask) and exists to check the vectorised code: ``tests/test_counting_reference.py``
compares both on random masks (identical topology, floats within 1e-6).

The description (see ``count_hairs``'s Notes) is restated step by step in the comments.
"""

from __future__ import annotations

import math

import numpy as np

# Same constants as the description (kept here, not imported, on purpose).
PAIR_MAX_DEV = 45.0
PAIR_WIDTH_W = 30.0
MERGE_F = 1.0
BRIDGE_F = 8.0
SPUR_F = 2.0
SPLIT_TURN = 45.0
HALF_WIN = 3
STEM_WIDTHS = 6.0
B2, B3 = 1.8, 3.0
B_MIN_HAIRS, B_ELONG = 4, 3.0
B_UM2, B_UM3 = 100.0, 200.0
B_UNEVEN, B_UNEVEN_UM = 0.12, 60.0
RAY_STEP = 1.0
RAY_FINE = 4
RETHIN_FRACTION = 0.25

NB8 = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def union_find(n):
    """``find`` and ``union`` over 0..n-1; a union keeps the smaller root."""
    par = list(range(n))

    def find(i):
        while par[i] != i:
            i = par[i]
        return i

    def union(i, j):
        a, z = find(i), find(j)
        if a != z:
            par[max(a, z)] = min(a, z)

    return find, union


def reference_count(mask, um_per_px=None) -> dict:
    """Count hairs in ``mask`` the slow, obvious way (``um_per_px``: scale, for bundles).

    Returns
    -------
    dict
        ``hairs``: one dict per hair in id order with ``path`` (list of (x, y)),
        ``length``, ``width``, ``width_sd``, ``unit``, ``bundle``; and ``labels``: dict
        {(y, x): hair id} over the mask pixels.
    """
    from skimage.morphology import skeletonize

    mask = np.asarray(mask).astype(bool)
    H, W = mask.shape
    fg = {(y, x) for y in range(H) for x in range(W) if mask[y, x]}
    if not fg:
        return {"hairs": [], "labels": {}}
    sk_arr = skeletonize(mask)
    skel = {(y, x) for y in range(H) for x in range(W) if sk_arr[y, x]}
    # a component thinned to almost nothing is thinned again, turned by 90 degrees
    for comp in _components(fg, _nbrs8, lambda p: p[0] * W + p[1]):
        ys = [p[0] for p in comp]
        xs = [p[1] for p in comp]
        y0, x0 = min(ys), min(xs)
        bh, bw = max(ys) - y0 + 1, max(xs) - x0 + 1
        have = [p for p in comp if p in skel]
        if len(have) >= RETHIN_FRACTION * math.hypot(bw, bh):
            continue
        box = np.zeros((bh, bw), bool)
        for y, x in comp:
            box[y - y0, x - x0] = True
        again = np.rot90(skeletonize(np.ascontiguousarray(np.rot90(box))), -1)
        if int(again.sum()) >= 2 * len(have):
            skel -= set(have)
            skel |= {(y0 + y, x0 + x) for y, x in zip(*np.nonzero(again), strict=True)}
    D = _edt(mask, fg)

    def nbrs(p, within):
        y, x = p
        return [(y + dy, x + dx) for dy, dx in NB8 if (y + dy, x + dx) in within]

    def rank(p):
        return p[0] * W + p[1]

    # 2. junction pixels (>= 3 skeleton neighbours), clusters, branches
    junc = {p for p in skel if len(nbrs(p, skel)) >= 3}
    bran = skel - junc
    clusters = _components(junc, nbrs, rank)
    branches = _components(bran, nbrs, rank)
    cluster_of = {p: i for i, c in enumerate(clusters) for p in c}
    nc, nb = len(clusters), len(branches)

    # order each branch: from its end pixel of smallest rank; a cycle from its first pixel
    # towards its neighbour of smaller rank
    paths = []
    cyc = []
    for comp in branches:
        cset = set(comp)
        ends = [p for p in comp if len(nbrs(p, cset)) <= 1]
        if ends:
            start = min(ends, key=rank)
            cyc.append(False)
        else:
            start = min(comp, key=rank)
            cyc.append(True)
        order = [start]
        seen = {start}
        cand = sorted(nbrs(start, cset), key=rank)
        cur = cand[0] if cand else None
        while cur is not None and cur not in seen:
            order.append(cur)
            seen.add(cur)
            nxt = [q for q in nbrs(cur, cset) if q not in seen]
            cur = nxt[0] if nxt else None
        assert len(order) == len(comp)
        paths.append(order)

    # 3. attach ends to clusters
    endc = []
    for b in range(nb):
        pth = paths[b]
        if cyc[b]:
            endc.append([-1, -1])
            continue
        if len(pth) == 1:
            js = sorted((q for q in nbrs(pth[0], junc)), key=rank)
            cs = [cluster_of[q] for q in js]
            endc.append([cs[0] if cs else -1, cs[1] if len(cs) > 1 else -1])
        else:
            a = [cluster_of[q] for q in nbrs(pth[0], junc)]
            z = [cluster_of[q] for q in nbrs(pth[-1], junc)]
            endc.append([a[0] if a else -1, z[0] if z else -1])

    R0 = [max(D[p] for p in c) for c in clusters]
    rb = [sum(D[p] for p in pth) / len(pth) for pth in paths]
    cen0 = [(sum(p[1] for p in c) / len(c), sum(p[0] for p in c) / len(c)) for c in clusters]

    def tangent(b, e, centre):
        """(base point, outward unit direction) of branch b at end e, or None."""
        pth = paths[b]
        n = len(pth)
        r = rb[b]
        k0 = min(n - 1, math.ceil(r))
        k1 = min(n - 1, k0 + math.ceil(4 * r))
        if k1 == k0:
            k0 = 0

        def pt(k):
            q = pth[k] if e == 0 else pth[n - 1 - k]
            return (float(q[1]), float(q[0]))

        if k1 == k0:
            p = pt(0)
            v = (p[0] - centre[0], p[1] - centre[1])
        else:
            p0, p1 = pt(k0), pt(k1)
            v = (p1[0] - p0[0], p1[1] - p0[1])
        nv = math.hypot(*v)
        if nv == 0:
            return None
        return pt(k0), (v[0] / nv, v[1] / nv)

    def deviation(da, dz):
        dot = -(da[0] * dz[0] + da[1] * dz[1])
        return math.degrees(math.acos(min(1.0, max(-1.0, dot))))

    # 3b. merge: short internal branches, or the bridge of a shallow X
    def terminal_short(b):
        a, z = endc[b]
        if (a >= 0) == (z >= 0):
            return False
        return len(paths[b]) < SPUR_F * R0[max(a, z)]

    ends0 = {}
    for b in range(nb):
        if terminal_short(b):
            continue
        for e in (0, 1):
            if endc[b][e] >= 0:
                ends0.setdefault(endc[b][e], []).append((b, e))
    find, union = union_find(nc)

    absorbed = [False] * nb
    for b in range(nb):
        c1, c2 = endc[b]
        if c1 < 0 or c2 < 0:
            continue
        lim = R0[c1] + R0[c2]
        ok = len(paths[b]) <= MERGE_F * lim
        if not ok and c1 != c2 and len(paths[b]) <= BRIDGE_F * lim:
            o1 = [x for x in ends0[c1] if x[0] != b]
            o2 = [x for x in ends0[c2] if x[0] != b]
            if len(o1) == 2 and len(o2) == 2 and len(ends0[c1]) == 3 and len(ends0[c2]) == 3:
                tol = max(R0[c1], R0[c2])
                f1 = [tangent(bb, ee, cen0[c1]) for bb, ee in o1]
                f2 = [tangent(bb, ee, cen0[c2]) for bb, ee in o2]

                def inline(a, z, tol=tol):
                    if a is None or z is None:
                        return False
                    if deviation(a[1], z[1]) > PAIR_MAX_DEV:
                        return False
                    vx, vy = z[0][0] - a[0][0], z[0][1] - a[0][1]
                    la = abs(a[1][0] * vy - a[1][1] * vx)
                    lz = abs(z[1][0] * vy - z[1][1] * vx)
                    return max(la, lz) <= tol

                ok = (inline(f1[0], f2[0]) and inline(f1[1], f2[1])) or (
                    inline(f1[0], f2[1]) and inline(f1[1], f2[0])
                )
        if ok:
            absorbed[b] = True
            union(c1, c2)
    root = [find(i) for i in range(nc)]
    R = {}
    members = {}
    for c in range(nc):
        R[root[c]] = max(R.get(root[c], 0.0), R0[c])
        members.setdefault(root[c], []).extend(clusters[c])
    cen = {
        r: (sum(p[1] for p in ps) / len(ps), sum(p[0] for p in ps) / len(ps))
        for r, ps in members.items()
    }
    endr = [[root[c] if c >= 0 else -1 for c in endc[b]] for b in range(nb)]

    # 4. spurs
    pruned = [False] * nb
    for b in range(nb):
        a, z = endr[b]
        if absorbed[b] or cyc[b] or (a >= 0) == (z >= 0):
            continue
        if len(paths[b]) < SPUR_F * R[max(a, z)]:
            pruned[b] = True
    alive = [not absorbed[b] and not pruned[b] for b in range(nb)]
    kept = {}
    for b in range(nb):
        if alive[b]:
            for c in endr[b]:
                if c >= 0:
                    kept[c] = kept.get(c, 0) + 1
    best = {}
    for b in range(nb):
        if pruned[b]:
            c = max(endr[b])
            if kept.get(c, 0) == 0 and (c not in best or len(paths[b]) > len(paths[best[c]])):
                best[c] = b
    for b in best.values():
        pruned[b] = False
    alive = [not absorbed[b] and not pruned[b] for b in range(nb)]

    # 5. pairing
    ends_at = {}
    for b in range(nb):
        if alive[b]:
            for e in (0, 1):
                if endr[b][e] >= 0:
                    ends_at.setdefault(endr[b][e], []).append((b, e))
    n_ends = {c: len(v) for c, v in ends_at.items()}
    partner = {}
    for c, ends in ends_at.items():
        if len(ends) < 2:
            continue
        dirs = [tangent(b, e, cen[c]) for b, e in ends]
        cand = []
        for i in range(len(ends)):
            for j in range(i + 1, len(ends)):
                if dirs[i] is None or dirs[j] is None:
                    continue
                dev = deviation(dirs[i][1], dirs[j][1])
                if dev > PAIR_MAX_DEV:
                    continue
                ri, rj = rb[ends[i][0]], rb[ends[j][0]]
                wd = abs(ri - rj) / max(ri, rj) if max(ri, rj) > 0 else 0.0
                cand.append((round(dev + PAIR_WIDTH_W * wd, 6), i, j))
        cand.sort()
        taken = set()
        for _, i, j in cand:
            if i not in taken and j not in taken:
                taken |= {i, j}
                partner[ends[i]] = ends[j]
                partner[ends[j]] = ends[i]

    # 6. chains -> hairs: list of (points, sources, ends, closed)
    def kind(b, e):
        c = endr[b][e]
        if c < 0:
            return ("free", paths[b][0] if e == 0 else paths[b][-1])
        return ("tip", c) if n_ends.get(c, 0) == 1 else ("term", c)

    used = [False] * nb
    chains = []

    def walk(b, e_in, closed=False):
        start = kind(b, e_in)
        seq = [] if (start[0] == "free" or closed) else [("c", start[1])]
        b0, e0 = b, e_in
        while True:
            used[b] = True
            seq.append(("b", b, e_in == 1))
            e_out = 1 - e_in
            if (b, e_out) not in partner:
                end = kind(b, e_out)
                if end[0] != "free":
                    seq.append(("c", end[1]))
                return (seq, [start, end], False)
            seq.append(("c", endr[b][e_out]))
            nxt = partner[(b, e_out)]
            if nxt == (b0, e0):
                return (seq, [None, None], True)
            b, e_in = nxt

    for b in range(nb):
        if not alive[b] or used[b]:
            continue
        if cyc[b]:
            used[b] = True
            chains.append(([("b", b, False)], [None, None], True))
            continue
        for e in (0, 1):
            if (b, e) not in partner:
                chains.append(walk(b, e))
                break
    for b in range(nb):
        if alive[b] and not used[b]:
            chains.append(walk(b, 0, closed=True))
    for c in range(nc):
        if root[c] == c and n_ends.get(c, 0) == 0:
            chains.append(([("c", c)], [("tip", c), ("tip", c)], False))

    raw = []
    for origin, (seq, ends, closed) in enumerate(chains):
        pts, srcs = [], []
        for el in seq:
            if el[0] == "b":
                pp = paths[el[1]][::-1] if el[2] else paths[el[1]]
                for p in pp:
                    pts.append((float(p[1]), float(p[0])))
                    srcs.append(("p", p))
            else:
                pts.append(cen[el[1]])
                srcs.append(("c", el[1]))
        for part in _split(pts, srcs, list(ends), closed, D):
            p2, s2, e2 = part
            if not closed and (p2[-1][1], p2[-1][0]) < (p2[0][1], p2[0][0]):
                p2, s2, e2 = p2[::-1], s2[::-1], e2[::-1]
            raw.append((p2, s2, e2, closed, origin))

    def first_key(s):
        return rank(s[1]) if s[0] == "p" else -1 - s[1]

    raw.sort(
        key=lambda r: (
            r[0][0][1],
            r[0][0][0],
            r[0][-1][1],
            r[0][-1][0],
            len(r[0]),
            first_key(r[1][0]),
        )
    )
    n = len(raw)

    # smoothing, steps
    hairs = []
    for pts, srcs, ends, closed, origin in raw:
        k = len(pts)
        sm = []
        for i in range(k):
            hw = min(HALF_WIN, (k - 1) // 2) if closed else min(HALF_WIN, i, k - 1 - i)
            ax, ay = pts[i]
            for d in range(1, hw + 1):
                for q in (pts[(i - d) % k], pts[(i + d) % k]):
                    ax += q[0]
                    ay += q[1]
            sm.append((ax / (2 * hw + 1), ay / (2 * hw + 1)))
        steps = [math.hypot(sm[i + 1][0] - sm[i][0], sm[i + 1][1] - sm[i][1]) for i in range(k - 1)]
        closing = math.hypot(sm[0][0] - sm[-1][0], sm[0][1] - sm[-1][1]) if closed else 0.0
        hairs.append(
            dict(
                pts=pts,
                src=srcs,
                ends=ends,
                closed=closed,
                origin=origin,
                sm=sm,
                steps=steps,
                closing=closing,
            )
        )

    # tips
    for hh in hairs:
        hh["tip"] = [0.0, 0.0]
        hh["trim"] = [0, 0]
        if hh["closed"]:
            continue
        pix = [D[s[1]] for s in hh["src"] if s[0] == "p"]
        r = sum(pix) / len(pix) if pix else R[hh["src"][0][1]]
        last = len(hh["pts"]) - 1
        k0 = math.ceil(r)
        if last < 2 * k0 + 1:
            k0 = 0
        k1 = min(last, k0 + math.ceil(4 * r))
        for j, end in enumerate(hh["ends"]):
            if end is None or end[0] == "term":
                continue
            if k1 == k0:
                val = R[end[1]] if end[0] == "tip" else D[end[1]]
                hh["tip"][j] = max(val - 0.5, 0.0)
                continue
            a = hh["sm"][k0 if j == 0 else last - k0]
            z = hh["sm"][k1 if j == 0 else last - k1]
            vx, vy = a[0] - z[0], a[1] - z[1]
            nv = math.hypot(vx, vy)
            hh["trim"][j] = k0
            if nv == 0:
                continue
            dx, dy = vx / nv, vy / nv
            cap = 32.0 * r + 16.0
            prev = _bilin(mask, a[0], a[1])
            if prev < 0.5:
                continue
            s = 1
            while True:
                tt = s * RAY_STEP
                cur = _bilin(mask, a[0] + tt * dx, a[1] + tt * dy)
                if cur < 0.5:
                    sub = RAY_STEP / RAY_FINE
                    lo = prev
                    for q in range(1, RAY_FINE + 1):
                        tq = tt - RAY_STEP + q * sub
                        fq = _bilin(mask, a[0] + tq * dx, a[1] + tq * dy)
                        if fq < 0.5:
                            hh["tip"][j] = tq - sub + sub * (lo - 0.5) / (lo - fq)
                            break
                        lo = fq
                    break
                if tt >= cap:
                    hh["tip"][j] = cap
                    break
                prev = cur
                s += 1

    # weights (length share of each point), lengths
    for hh in hairs:
        k = len(hh["pts"])
        st = hh["steps"]
        wts = []
        for i in range(k):
            before = st[i - 1] if i > 0 else (hh["closing"] if hh["closed"] else 0.0)
            after = st[i] if i < k - 1 else (hh["closing"] if hh["closed"] else 0.0)
            wts.append(0.5 * before + 0.5 * after)
        ta, tb = hh["trim"]
        ka, kb = ta, k - 1 - tb
        for i in range(k):
            if i < ka or i > kb:
                wts[i] = 0.0
        if ta > 0:
            wts[ka] = 0.5 * st[ka]
        wts[ka] += hh["tip"][0]
        if tb > 0:
            wts[kb] = 0.5 * st[kb - 1]
        wts[kb] += hh["tip"][1]
        hh["w"] = wts
        hh["length"] = sum(wts)

    # 7. ownership of skeleton pixels, nearest-skeleton assignment
    touching = {}
    for i, hh in enumerate(hairs):
        for s in hh["src"]:
            if s[0] == "c":
                touching.setdefault(s[1], set()).add(i + 1)
    zone_area = {c: (min(v) if len(v) == 1 else 0) for c, v in touching.items()}
    zone_label = {c: min(v) for c, v in touching.items()}
    area_owner, label_owner = {}, {}
    for i, hh in enumerate(hairs):
        for s in hh["src"]:
            if s[0] == "p":
                area_owner[s[1]] = i + 1
                label_owner[s[1]] = i + 1
    for c in range(nc):
        for p in clusters[c]:
            area_owner[p] = zone_area.get(root[c], 0)
            label_owner[p] = zone_label.get(root[c], 0)
    for b in range(nb):
        if absorbed[b] or pruned[b]:
            c = endr[b][0] if endr[b][0] >= 0 else endr[b][1]
            for p in paths[b]:
                area_owner[p] = zone_area.get(c, 0)
                label_owner[p] = zone_label.get(c, 0)
    # a mask pixel belongs to a skeleton pixel of its own 8-connected mask component
    component_of = {}
    for i, comp in enumerate(_components(fg, nbrs, rank)):
        for p in comp:
            component_of[p] = i
    skel_of_component = {}
    for q in sorted(skel, key=rank):
        skel_of_component.setdefault(component_of[q], []).append(q)
    area = [0] * (n + 1)
    labels = {}
    for p in sorted(fg, key=rank):
        best_q, best_d = None, None
        for q in skel_of_component[component_of[p]]:
            d = (q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2
            if best_d is None or d < best_d:
                best_q, best_d = q, d
        area[area_owner.get(best_q, 0)] += 1
        labels[p] = label_owner.get(best_q, 0)

    for i, hh in enumerate(hairs):
        le = 0.0
        for s, wt in zip(hh["src"], hh["w"], strict=True):
            if s[0] == "p" or zone_area.get(s[1], 0) == i + 1:
                le += wt
        hh["width"] = area[i + 1] / le if le > 0 else 0.0
        # width SD away from ends and junction points
        k = len(hh["pts"])
        barriers = [j for j, s in enumerate(hh["src"]) if s[0] == "c"]
        if not hh["closed"]:
            barriers += [0, k - 1]
        margin = math.ceil(hh["width"] / 2)
        vals = []
        for j, s in enumerate(hh["src"]):
            if s[0] != "p":
                continue
            gap = min((abs(j - q) for q in barriers), default=math.inf)
            if gap > margin:
                vals.append(2.0 * D[s[1]])
        if len(vals) >= 2:
            mu = sum(vals) / len(vals)
            hh["sd"] = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))
        else:
            hh["sd"] = 0.0

    # 8. units
    ufind, uunion = union_find(n)

    first_of = {}
    for i, hh in enumerate(hairs):
        uunion(first_of.setdefault(hh["origin"], i), i)
    ending, passing = {}, {}
    for i, hh in enumerate(hairs):
        for end in hh["ends"]:
            if end is not None and end[0] == "term":
                ending.setdefault(end[1], []).append(i)
        k = len(hh["src"])
        for j, s in enumerate(hh["src"]):
            if s[0] == "c" and (hh["closed"] or 0 < j < k - 1):
                passing.setdefault(s[1], []).append((i, j))
    for c, hs in ending.items():
        for j in hs[1:]:
            uunion(hs[0], j)
        for b, p in passing.get(c, []):
            hb = hairs[b]
            if hb["closed"]:
                continue
            before = sum(hb["steps"][:p]) + hb["tip"][0]
            after = sum(hb["steps"][p:]) + hb["tip"][1]
            if min(before, after) <= STEM_WIDTHS * hb["width"]:
                uunion(hs[0], b)
    uid = {}
    units = [uid.setdefault(ufind(i), len(uid) + 1) for i in range(n)]

    # 9. bundles: the largest of (a) width against the typical width W (median width of
    # the upper half of the elongated hairs, when there are enough), (b) width in µm
    # against the single-hair maximum (scale known), (c) 2 for a wide shaft whose width is
    # uneven along it.
    el = [hh["width"] for hh in hairs if hh["width"] > 0 and hh["length"] >= B_ELONG * hh["width"]]
    typ = 0.0
    if len(el) >= B_MIN_HAIRS:
        med = _median(el)
        typ = _median([v for v in el if v >= med])
    bundles = []
    for hh in hairs:
        w = hh["width"]
        k = 1
        if typ > 0:
            q = w / typ
            if q >= B3:
                k = 3
            elif q >= B2:
                k = 2
        uneven = w > 0 and hh["sd"] >= B_UNEVEN * w
        if um_per_px is not None:
            u = w * um_per_px
            if u >= B_UM3:
                k = 3
            elif u >= B_UM2:
                k = max(k, 2)
            wide = u >= B_UNEVEN_UM
        else:
            wide = typ > 0 and w >= typ
        if uneven and wide:
            k = max(k, 2)
        bundles.append(k)

    out = []
    for i, hh in enumerate(hairs):
        out.append(
            dict(
                path=hh["sm"],
                length=hh["length"],
                width=hh["width"],
                width_sd=hh["sd"],
                unit=units[i],
                bundle=bundles[i],
            )
        )
    return {"hairs": out, "labels": labels}


def _bilin(mask, x: float, y: float) -> float:
    """Bilinear interpolation of the mask at (x, y), 0 outside the image."""
    H, W = mask.shape
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0

    def val(yy, xx):
        return 1.0 if (0 <= xx < W and 0 <= yy < H and mask[yy, xx]) else 0.0

    return (
        (1 - fx) * (1 - fy) * val(y0, x0)
        + fx * (1 - fy) * val(y0, x0 + 1)
        + (1 - fx) * fy * val(y0 + 1, x0)
        + fx * fy * val(y0 + 1, x0 + 1)
    )


def _median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _edt(mask, fg) -> dict:
    """Exact distance of each foreground pixel to the nearest background pixel in the image,
    by searching square rings outwards (inf when the image has no background)."""
    H, W = mask.shape
    out = {}
    for y, x in fg:
        best = None
        r = 1
        while best is None or (r - 1) ** 2 < best:
            if r > max(H, W):
                break
            for yy in range(y - r, y + r + 1):
                for xx in range(x - r, x + r + 1) if yy in (y - r, y + r) else (x - r, x + r):
                    if 0 <= yy < H and 0 <= xx < W and not mask[yy, xx]:
                        d = (yy - y) ** 2 + (xx - x) ** 2
                        if best is None or d < best:
                            best = d
            r += 1
        out[(y, x)] = math.sqrt(best) if best is not None else math.inf
    return out


def _nbrs8(p, within):
    y, x = p
    return [(y + dy, x + dx) for dy, dx in NB8 if (y + dy, x + dx) in within]


def _components(pixels, nbrs, rank) -> list[list]:
    """8-connected components, each in raster order, ordered by their first pixel."""
    left = set(pixels)
    comps = []
    for p in sorted(pixels, key=rank):
        if p not in left:
            continue
        left.discard(p)
        comp, stack = [p], [p]
        while stack:
            q = stack.pop()
            for r in nbrs(q, left):
                left.discard(r)
                comp.append(r)
                stack.append(r)
        comps.append(sorted(comp, key=rank))
    return comps


def _split(pts, srcs, ends, closed, D):
    """Split an open path at turns sharper than SPLIT_TURN (a V apex without a junction)."""
    if closed:
        return [(pts, srcs, ends)]
    pix = [D[s[1]] for s in srcs if s[0] == "p"]
    if not pix:
        return [(pts, srcs, ends)]
    r = sum(pix) / len(pix)
    s = max(2, math.ceil(4 * r))

    def rec(p, sr, en):
        k = len(p)
        if k < 2 * s + 1:
            return [(p, sr, en)]
        turns = []
        for i in range(s, k - s):
            v1 = (p[i][0] - p[i - s][0], p[i][1] - p[i - s][1])
            v2 = (p[i + s][0] - p[i][0], p[i + s][1] - p[i][1])
            cr = abs(v1[0] * v2[1] - v1[1] * v2[0])
            dt = v1[0] * v2[0] + v1[1] * v2[1]
            turns.append(math.degrees(math.atan2(cr, dt)))
        top = max(turns)
        if top <= SPLIT_TURN:
            return [(p, sr, en)]
        i = next(j for j, t in enumerate(turns) if t >= top - 1e-9) + s
        if sr[i][0] != "p":
            return [(p, sr, en)]
        corner = ("corner", sr[i][1])
        return rec(p[: i + 1], sr[: i + 1], [en[0], corner]) + rec(p[i:], sr[i:], [corner, en[1]])

    return rec(pts, srcs, ends)
