import json, sys, numpy as np
EYES = [(36, 39, [37, 38], [41, 40]), (42, 45, [43, 44], [47, 46])]
def eye_coords(lm, iris):
    """Iris offset from the eye-opening centre in eye coordinates (x along corner a->b, y down, unit = eye width),
    per eye; positive x = towards corner b. Returns [[dx, dy], [dx, dy]] or None."""
    if lm is None or iris is None: return None
    lm = np.asarray(lm, float); out = []
    for e, (a, b, up, lo) in enumerate(EYES):
        A, B = lm[a], lm[b]; ex = B - A; w2 = ex @ ex
        def to(q):
            d = np.asarray(q, float) - A
            return np.array([d @ ex, -d[0] * ex[1] + d[1] * ex[0]]) / w2
        c = to(iris[e][:2])
        ymid = np.mean([to(lm[i])[1] for i in up + lo])
        out.append([c[0] - 0.5, c[1] - ymid])
    return np.array(out)
if __name__ == "__main__":
    rows = []
    for f in sys.argv[1:]:
        r = json.loads(open(f).readline())
        o = eye_coords(r["lm68"], r["iris"])
        if o is None: print(f, "no face"); continue
        # x towards the nose: right eye (36 outer -> 39 inner) +x, left eye (42 inner -> 45 outer) -x
        nasal = [o[0][0], -o[1][0]]
        rows.append([*nasal, o[0][1], o[1][1]])
        print(f"{f:20s} nasal x {nasal[0]:+.3f} {nasal[1]:+.3f}  y {o[0][1]:+.3f} {o[1][1]:+.3f}")
    rows = np.array(rows)
    print("median", np.median(rows, 0).round(3), "mean", rows.mean(0).round(3))
