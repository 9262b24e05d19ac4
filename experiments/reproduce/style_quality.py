"""The style-quality report (issue 31): what each path from a painting to a picture gives on
held-out photos — shipped feed-forward model, arbitrary WCT, arbitrary AdaIN, optimisation —
scored by ``stylize score`` (S, C, seconds) with contact sheets, plus the loss-recipe comparison.

The README is rendered from the committed score files (``render``), so its tables cannot drift
from the data: ``python -m experiments.reproduce.style_quality reports/style-quality`` rewrites
it; ``tests/test_style_quality_report.py`` fails when the committed text and the data disagree.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

FILES = {"forward": "forward.json", "wct08": "wct_alpha08.json", "optimize": "optimize.json",
         "ab": "recipe_ab_300steps.json", "retrain": "retrain.json", "tv": "retrain_s15.json",
         "candy": "candy_s16.json", "refine": "refine.json", "four17": "four_s17.json",
         "heads": "heads_s18.json", "heads_add": "heads_add_s19.json",
         "four19": "four_s19.json"}
BEFORE = "model:four_styles_bin (before: absolute loss)"
AFTER = "model:four_styles_bin (after: relative loss)"
# the session-15 follow-ups of the retrain (retrain_s15.json)
SHIPPED = "model:four_styles_bin (shipped, session 14)"
TV = "model:four_styles_bin + TV 4 (+1,300 steps)"
TV_SW = "model:four_styles_bin + TV 4, mosaic style ×1.6 (+480 more)"
# session 16: candy_bin trained again (candy_s16.json) and WCT + refine (refine.json)
CANDY_OLD = "model:candy_bin (previous: 1,100 steps, absolute loss, all 557 photos)"
CANDY_NEW = ("model:candy_bin (session 16: 3,600 steps from scratch, relative loss, TV 4, "
             "training photos only)")
REFINE = "wct:refine=20"
# session 17: four_styles_bin trained again from the clean candy_bin (four_s17.json)
FOUR17 = ("model:four_styles_bin clean try (session 17: from candy_bin, content 1.5, TV 1, "
          "2,400 steps)")
# session 18: candy from scratch, 500 steps at 128 px, residual vs linear output head (heads_s18.json)
RES31, RES21 = ("model:candy residual head, content relu3_1", "model:candy residual head, content relu2_1")
LIN31, LIN21 = ("model:candy linear head, content relu3_1", "model:candy linear head, content relu2_1")
LIN31X2 = "model:candy linear head, content relu3_1 ×2"
# session 19: four_styles_bin from scratch with the linear head (four_s19.json)
FOUR19 = "model:four_styles_bin from scratch, linear head (session 19: content 2, 6,000 of 8,000 steps)"
# session 19: the additive head y = x + z, same runs otherwise (heads_add_s19.json)
ADD31, ADD31X2 = ("model:candy additive head, content relu3_1",
                  "model:candy additive head, content relu3_1 ×2")


def _table(path: Path) -> str:
    from stylize import score as sc

    d = json.loads(path.read_text())
    r = sc.ScoreResult(cells=d.get("cells", []), summary=d["summary"], methods=d["methods"],
                       skipped=d.get("skipped", []), settings=d["settings"])
    return sc.markdown(r).strip()


def _mean(path: Path, method: str, key: str) -> float:
    d = json.loads(path.read_text())
    return next(m[key] for m in d["methods"] if m["method"] == method)


def _cell(path: Path, method: str, style: str, key: str = "S") -> float:
    """One (method, style) mean from a score file's summary."""
    d = json.loads(path.read_text())
    return next(r[key] for r in d["summary"] if r["method"] == method and r["style"] == style)


def _paired_lines(path: Path, before: str = BEFORE, after: str = AFTER) -> str:
    """``after`` − ``before``, paired by (photo, style), Holm over the two measures."""
    from experiments.reproduce.stats import holm, paired

    cells = json.loads(path.read_text())["cells"]
    key = {(c["photo"], c["style"]): c for c in cells if c["method"] == before}
    pairs = [(key[(c["photo"], c["style"])], c) for c in cells
             if c["method"] == after and (c["photo"], c["style"]) in key]
    gaps = holm([paired([a[m] for _, a in pairs], [b[m] for b, _ in pairs], "after", "before")
                 for m in ("S", "C")])
    return "\n".join(f"- {m}: {g.sentence(unit='')}" for m, g in zip(("S", "C"), gaps))


def _cells(path: Path, method: str) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["method"] == method]


def crop_figure(models: list[tuple[str, str]], photo: str | Path, styles: list[str],
                out: str | Path, width: int = 512, box: float = 0.4, zoom: int = 2) -> Path:
    """A grid of 200 % crops: one row per style, one column per (label, model file), the centre
    ``box`` fraction of ``photo`` stylized at ``width`` px and enlarged ``zoom``× (nearest), so a
    grid or halo shows as it does on screen at 200 %."""
    from PIL import Image, ImageDraw

    from stylize import load_model
    from stylize.infer import stylize_image

    src = Image.open(photo).convert("RGB")
    src = src.resize((width, round(src.height * width / src.width)), Image.LANCZOS)
    w, h = src.size
    cw, ch = int(w * box), int(h * box)
    x0, y0 = (w - cw) // 2, max(0, h // 4 - ch // 4)
    cells = []
    for style in styles:
        row = []
        for _, path in models:
            y = stylize_image(load_model(path), src, style=style, bar=False, backend="torch")
            row.append(y.crop((x0, y0, x0 + cw, y0 + ch)).resize((cw * zoom, ch * zoom),
                                                                Image.NEAREST))
        cells.append(row)
    pad, head = 6, 22
    sheet = Image.new("RGB", (len(models) * (cw * zoom + pad) + 110,
                              head + len(styles) * (ch * zoom + pad)), "white")
    d = ImageDraw.Draw(sheet)
    for j, (label, _) in enumerate(models):
        d.text((110 + j * (cw * zoom + pad), 4), label, fill="black")
    for i, (style, row) in enumerate(zip(styles, cells)):
        d.text((4, head + i * (ch * zoom + pad) + 4), style, fill="black")
        for j, im in enumerate(row):
            sheet.paste(im, (110 + j * (cw * zoom + pad), head + i * (ch * zoom + pad)))
    out = Path(out)
    from engine.images import save_image

    save_image(sheet, out)
    return out


def render(folder: str | Path) -> str:
    """The report's README text from the score files in ``folder``."""
    f = {k: Path(folder) / v for k, v in FILES.items()}
    wct_s, wct_c = _mean(f["forward"], "wct", "S"), _mean(f["forward"], "wct", "C")
    ada_s, ada_c = _mean(f["forward"], "adain", "S"), _mean(f["forward"], "adain", "C")
    opt_s, opt_c = _mean(f["optimize"], "optimize", "S"), _mean(f["optimize"], "optimize", "C")
    ff = "model:four_styles_bin"
    ff_s, ff_c = _mean(f["retrain"], BEFORE, "S"), _mean(f["retrain"], BEFORE, "C")
    new_s, new_c = _mean(f["retrain"], AFTER, "S"), _mean(f["retrain"], AFTER, "C")
    min_s = _mean(f["retrain"], AFTER, "S_min")
    unseen = ("the_scream", "la_muse", "woman_with_hat")
    wct_unseen_s = min(_cell(f["forward"], "wct", u) for u in unseen)
    wct_unseen_c = sum(_cell(f["forward"], "wct", u, "C") for u in unseen) / len(unseen)
    wct_min = _mean(f["forward"], "wct", "S_min")
    w08_s, w08_c = _mean(f["wct08"], "wct", "S"), _mean(f["wct08"], "wct", "C")
    wct_cs = [_cell(f["forward"], "wct", u, "C") for u in ("candy", "mosaic", "the_great_wave") + unseen]
    r_s, r_c = _mean(f["refine"], REFINE, "S"), _mean(f["refine"], REFINE, "C")
    r_min = _mean(f["refine"], REFINE, "S_min")
    r_unseen_s = min(_cell(f["refine"], REFINE, u) for u in unseen)
    r_unseen_c = sum(_cell(f["refine"], REFINE, u, "C") for u in unseen) / len(unseen)
    r_time = _mean(f["refine"], REFINE, "seconds") / _mean(f["refine"], "wct", "seconds")
    cn_s, cn_c = _mean(f["candy"], CANDY_NEW, "S"), _mean(f["candy"], CANDY_NEW, "C")
    co_s, co_c = _mean(f["candy"], CANDY_OLD, "S"), _mean(f["candy"], CANDY_OLD, "C")
    return f"""# Style quality: from a painting to a picture

What a user gets from each path on photos no model here was trained on: the first held-out
photos of `../shared/data/content-split.json` (a portrait, a sailboat, a tiger, a starfish), and
six paintings, of which **the_scream, la_muse and woman_with_hat were used in no training**
(candy, mosaic and the_great_wave are styles of the shipped `four_styles_bin`). Scored by
`normlab stylize score` at a 384 px short side: style strength S = 1 − L_style(out)/L_style(photo)
(Gram losses at relu1_1, relu2_1, relu3_1 against the painting; 0 = the photo, 1 = the
painting's statistics), content drift C = ‖φ_relu3_1(out) − φ_relu3_1(photo)‖²/‖φ_relu3_1(photo)‖²,
and seconds per image (set-up excluded) on this project's 2-core CPU while other jobs shared it
(times are inflated by up to ~2× and only comparable within a table). The issue's targets:
S ≥ 0.90 with mean C ≤ 1.5.

## Summary

| path | mean S | mean C | s / 384 px image | meets S ≥ 0.90, C ≤ 1.5 |
|---|---:|---:|---:|---|
| shipped feed-forward `four_styles_bin`, retrained with the relative loss (its 4 styles, 8 photos) | {new_s:.3f} | {new_c:.3f} | {_mean(f['retrain'], AFTER, 'seconds'):.2f} | S yes (≥ {min_s:.2f} on every style), C no |
| the same model before (session 13, absolute loss; 4 styles, 8 photos) | {ff_s:.3f} | {ff_c:.3f} | {_mean(f['retrain'], BEFORE, 'seconds'):.2f} | no |
| any painting, WCT (`stylize run --style-image`; 6 paintings, 4 photos) | {wct_s:.3f} | {wct_c:.3f} | {_mean(f['forward'], 'wct', 'seconds'):.2f} | no on all six (mosaic S {wct_min:.2f}); yes on the three used in no training (S ≥ {wct_unseen_s:.2f}, mean C {wct_unseen_c:.2f}) |
| any painting, WCT + 20 optimiser iterations (`--refine 20`; 6 paintings, 2 photos) | {r_s:.3f} | {r_c:.3f} | {_mean(f['refine'], REFINE, 'seconds'):.2f} ({r_time:.0f}× one-pass WCT in the same run) | {"yes" if r_min >= 0.90 and r_c <= 1.5 else f"C yes, S no on all six (mosaic {r_min:.2f})"}; {"yes" if r_unseen_s >= 0.90 and r_unseen_c <= 1.5 else "no"} on the three used in no training (S ≥ {r_unseen_s:.2f}, mean C {r_unseen_c:.2f}) |
| shipped feed-forward `candy_bin`, trained again from scratch on the training photos (8 photos) | {cn_s:.3f} | {cn_c:.3f} | {_mean(f['candy'], CANDY_NEW, 'seconds'):.2f} | S {"yes" if cn_s >= 0.90 else "no"}, C no (before: S {co_s:.3f}, C {co_c:.3f}) |
| any painting, WCT `--alpha 0.8` | {w08_s:.3f} | {w08_c:.3f} | {_mean(f['wct08'], 'wct', 'seconds'):.2f} | no (C just over; mosaic S {_mean(f['wct08'], 'wct', 'S_min'):.2f}) |
| any painting, AdaIN (`--method adain`) | {ada_s:.3f} | {ada_c:.3f} | {_mean(f['forward'], 'adain', 'seconds'):.2f} | no (S) |
| optimisation (`stylize optimize`, 80/40/20 iterations, 2 photos × 3 paintings) | {opt_s:.3f} | {opt_c:.3f} | {_mean(f['optimize'], 'optimize', 'seconds'):.0f} | yes |

What the pictures show (contact sheets below, looked at in full and in 100 % crops):
- **Shipped feed-forward, retrained:** more of each painting than before, still not its
  shapes. Rain_princess now puts Afremov's blue/orange knife dabs over the whole photo, the
  great wave Hokusai's teal and cream with blue line work, candy flatter red/blue fields with
  darker outlines, mosaic pale fields cut by irregular dark lead-like lines (before: a fine
  cross-hatch mesh). At 200 % rain_princess shows a 4–6 px block grid on smooth skin (the
  old model's grid was fainter there); mosaic's and candy's mesh is weaker than before. No
  candy swirls or mosaic tiles yet.
- **WCT (any painting):** the painting's palette *and* its marks: candy's blobs and swirl
  fragments, la_muse's bold black outlines and flat green/red/blue patches, woman_with_hat's
  Fauvist patches, the_scream's orange-black brushwork, starry_night's blue swirls with yellow
  dabs ([docs/stylize_any_painting.jpg](../../docs/stylize_any_painting.jpg)). The price is
  content: faces and fine structure break up where the painting is busy (C
  {min(wct_cs):.1f}–{max(wct_cs):.1f} by painting), and skies become soft blotches of the
  painting's colours with a faint decoder texture at 200 %. No halos. Session 15 cut C from
  2.28 to {wct_c:.2f} at the same S: the relu2_1 decoder trained to its full 1,200 steps
  (held-out PSNR 24.4 → 30.3 dB), and the score now runs the one-pass default users get (it
  had scored `--scales 2,1`, whose half-size pass blows a bright forehead out to a flat grey
  patch). `--alpha 0.8` trades a little of each (table below).
- **AdaIN:** the palette and softer texture, the face intact; weaker strokes (mosaic S
  {_cell(f['forward'], 'adain', 'mosaic'):.2f}).
- **Optimisation:** the reference. Candy's swirls and outlines on the portrait and the sail,
  the_scream's orange wavy strokes, la_muse's black contours and colour fields, with the
  photo's content clearly kept (C 0.4–1.7). Minutes per image.

## Feed-forward, WCT and AdaIN (4 photos × 6 paintings)

The `model:four_styles_bin` rows and sheet columns here are the shipped model (the session-14
retrain; its before/after comparison is in "The feed-forward recipe" below); WCT and AdaIN run
with the shipped decoders and one pass (`--scales 1`, the default).

{_table(f['forward'])}

![contact sheet: photos × (painting, method), S, C and seconds under each](sheet_forward.jpg)

WCT with `--alpha 0.8`:

{_table(f['wct08'])}

## Optimisation (2 photos × 3 paintings)

{_table(f['optimize'])}

![optimisation contact sheet](sheet_optimize.jpg)

## The feed-forward recipe

Why the shipped models are colour grades, measured: their loss summed raw Gram MSEs over
relu1_1, relu2_1 and relu3_1, and for candy the target Gram matrix's mean square is 0.0040 at
relu1_1 against 0.00031 at relu3_1 (13×). So relu1_1 — mostly colour and fine edges —
dominated training: on the held-out portrait `four_styles_bin` (candy) brings the relative Gram
error at relu1_1 down to 0.10 (the photo's: 0.61) but at relu3_1, where the shapes are, only to
0.33 (the photo's: 0.86). The change: `stylize train --loss relative` (now the default) divides
each term by its target's mean square, as the optimiser does — every tap weighs the same,
content is measured at relu3_1, and the weights (content 1, style 5) mean the same for every
painting.

A first comparison at equal budget — candy from scratch, BIN, 128 px, batch 4, 300 steps,
seed 0, absolute vs relative loss, scored on 8 held-out photos — is **too small to show
anything**: both networks have barely left the photo (orange or dark-red blotches, no strokes),
and their S are within each other's spread:

{_table(f['ab'])}

**The retrain.** `four_styles_bin` was trained on from its session-13 weights with the relative
loss for 1,800 more steps (450 batches of 4 per style at 192 px, bf16 autocast, one thread,
75 minutes), on the 501 training photos only (the held-out photos excluded, which the old
model's run had not done). Scored before and after on the first 8 held-out photos × its 4
styles at 384 px (before/after paired by photo and style, Holm over the two measures):

{_table(f['retrain'])}

{_paired_lines(f['retrain'])}

Every style now reaches S ≥ 0.90; content drift rose a little, and mosaic's (2.7) keeps the
mean above the 1.5 target. A network that draws a painting's shapes (candy's swirls, mosaic's
tiles) still needs far more images per style than this CPU gave it (450 batches per style here;
Johnson et al.: 160,000 images), so for a painting that matters `stylize run --style-image`
(seconds) and `stylize optimize` (minutes) remain the better paths.

![before/after contact sheet: for each style, the old model then the retrained one (columns labelled with the run files)](sheet_retrain.jpg)

**Against the grid: a total-variation term (session 15; not shipped).** The retrained model's
fine grid comes from the loss, not the upsampling (the network already upsamples by nearest ×2
+ convolution): relu3_1's Gram statistics cannot see a 2–4 px pattern, so nothing stops the
network from drawing one. Training went on from the retrain's run (its step-1,900 checkpoint,
100 steps past the shipped file) for 1,200 steps with `--tv-weight 4` (the TV term then carries
about a quarter of the gradient the style and content terms do), then 480 more with mosaic's
style weight ×1.6 (`--style-weights 1,1.6,1,1`) to win back mosaic's strength. Same 8 held-out
photos × 4 styles at 384 px:

{_table(f['tv'])}

TV 4 against the shipped model (paired by photo and style; Holm over the two measures):

{_paired_lines(f['tv'], SHIPPED, TV)}

With mosaic ×1.6 on top, against the shipped model:

{_paired_lines(f['tv'], SHIPPED, TV_SW)}

At 200 % (below, the held-out portrait) TV 4 takes most of the mesh off skin in candy, the great
wave and rain_princess, where a weaker grid remains on the forehead and in the hair; mosaic
comes out smoother and paler, its crackle texture gone, which is the S it lost
({_cell(f['tv'], SHIPPED, 'mosaic'):.2f} → {_cell(f['tv'], TV, 'mosaic'):.2f}). Mosaic ×1.6 did not
win it back in 480 steps ({_cell(f['tv'], TV_SW, 'mosaic'):.2f}) and cost the other styles some S. Neither
model ships: the shipped one keeps S ≥ 0.90 on every style. The next step is TV on the styles
with a grid and none on mosaic, whose own texture is fine (a per-style TV weight, like
`--style-weights`).

![200 % crops of the held-out portrait: the shipped model and the TV 4 model, one row per style](crops_tv.jpg)

**`candy_bin` trained again (session 16; shipped).** The previous `candy_bin` (1,100 steps,
absolute loss) had trained on all 557 photos, the held-out ones included. The new one trains
from scratch on the 501 training photos only, with the relative loss, style scales 1 and 2 and
TV 4: 3,600 steps at 192 px, batch 4, bf16 on 2 threads, 1,800 in session 15 and an exact
resume to 3,600 in session 16 (about 2 h 15 min). Same 8 held-out photos at 384 px (paired by
photo; Holm over the two measures):

{_table(f['candy'])}

{_paired_lines(f['candy'], CANDY_OLD, CANDY_NEW)}

At 1,800 steps it scored S 0.857, C 1.89: the extra 1,800 steps bought S, not C. In the
pictures (sheet below; the second column is the previous model, the third the new one): the
previous model's fine 3–4 px grid over every surface is gone, at 200 % too; candy's black
outlines, red blobs and yellow / pale-blue palette are drawn over the sailboat's water, the
tiger's background and the portrait's hair; but large bright areas (the portrait's face, the
starfish's background) wash out to pale blue-white, and that is most of its content drift
(C {min(c['C'] for c in _cells(f['candy'], CANDY_NEW)):.2f}–{max(c['C'] for c in _cells(f['candy'], CANDY_NEW)):.2f} by photo).

![candy_bin before/after: photo, previous model, new model (columns labelled with the files scored)](sheet_candy_s16.jpg)

**`four_styles_bin` trained clean (session 17; not shipped).** The shipped `four_styles_bin`
descends from models that saw all 557 photos (its manifest says so), so it cannot serve as a
clean base. A try: from the clean `candy_bin`, every parameter, the four styles, content
weight 1.5 (to bring C under 1.5), TV 1 (lighter than `candy_bin`'s 4, which washed out bright
areas), mosaic's style ×1.3; 2,400 steps at 192 px (600 per style), batch 4, bf16, 2 threads,
66 min (`runs/s17/four.sh`). Same 8 held-out photos × 4 styles at 384 px:

{_table(f['four17'])}

{_paired_lines(f['four17'], SHIPPED, FOUR17)}

C fell below the target, but by giving up a fifth of the style strength; in the pictures (the
held-out portrait and sailboat below, 100 % crops looked at) every style is a pale yellow or
teal wash, and all four carry `candy_bin`'s red-and-black blobs, on the portrait's eyes as two
glowing red spots. Initialising from a single-style model carried its marks into every
style, and 600 steps per style did not remove them. Not shipped; the next try starts from
scratch with the shipped model's loss settings (content 1, style scales 1 and 2, no TV).

![shipped four_styles_bin then the session-17 try, per style (columns labelled with the files scored)](sheet_four_s17.jpg)

**The output head: why the from-scratch models are colour grades with black holes (session
18).** A from-scratch `four_styles_bin` (the shipped model's loss settings, residual head) was
still a colour grade with large black holes in the background after 2,975 of its 8,000 steps,
and the shipped `candy_bin` (3,600 steps from scratch) keeps black and red patches on the
portrait's eyes and cheek (its previews show them from step 600 to the end). To find the cause
at a cost this CPU affords: candy from scratch, BIN, 128 px, batch 4, 500 steps, seed 42,
relative loss, one change per run (`stylize train` options; commands below; 10 minutes each, two at a time, one thread each):
the output head (`--output residual`, the default, or `linear`), the content layer
(relu3_1, the default, or relu2_1: the new `--content-layer`), BN instead of BIN (whether
instance statistics invite the blobs, as they do in StyleGAN), and content weight ×2. The
same 8 held-out photos at 384 px:

{_table(f['heads'])}

Residual → linear head, paired by photo (n = 8). Content at relu3_1:

{_paired_lines(f['heads'], RES31, LIN31)}

Content at relu2_1:

{_paired_lines(f['heads'], RES21, LIN21)}

The linear head gives far more style and moves further from the photo (C up too). The
pictures (the sheet below; the linear-head portrait at 512 px and 300 % crops looked at) say
more, and more plainly. Every residual-head run is the photo with a colour cast and holes:
black dots over the face, the sail and the starfish (content relu3_1), dark-red pools in the
water and around the tiger (relu2_1: the subjects stay intact, the background does not),
blown-out white patches (BN, so not the instance statistics). Every linear-head run is a
candy painting: the photo redrawn in candy's red, yellow and pale blue bands with dark
outlines, the sailboat and the starfish clear, the face readable; at 300 % thick painterly
bands with pale-blue and pink edges, slightly soft, no grid. Content ×2 (S
{_mean(f['heads'], LIN31X2, 'S'):.3f}, C {_mean(f['heads'], LIN31X2, 'C'):.3f}) keeps more of
each face. The shipped `candy_bin` (3,600 steps at 192 px, residual head, TV 4)
scores S {cn_s:.3f}, C {cn_c:.3f}: the linear head with content ×2 is as strong, closer to the
photo and free of holes after 500 steps at 128 px.

Why (session 18's guess, corrected in session 19): the residual head computes
y = 263·σ(logit(x̃) + z) − 4, so the network starts as the photo (chosen so that early previews
are not black); a dark candy stroke across a bright area needs a large z, and where the sigmoid
saturates its gradient vanishes, so a saturated hole where the photo is already dark is a cheap
way to match the painting's share of dark pixels. That explains the holes, not the colour
grade. The test: an **additive head**, y = x + z (`--output additive`), which starts as the
photo too but cannot saturate. The same candy runs, 500 steps at 128 px, seed 42, scored on
the same 8 held-out photos beside the residual and linear runs above:

{_table(f['heads_add'])}

Additive → linear head, paired by photo (n = 8). Content weight 1:

{_paired_lines(f['heads_add'], ADD31, LIN31)}

Content weight 2:

{_paired_lines(f['heads_add'], ADD31X2, LIN31X2)}

The additive runs stay next to the photo (S {_mean(f['heads_add'], ADD31, 'S'):.2f} and
{_mean(f['heads_add'], ADD31X2, 'S'):.2f}; C {_mean(f['heads_add'], ADD31, 'C'):.2f} and {_mean(f['heads_add'], ADD31X2, 'C'):.2f}).
In the sheet below and at 100 % they are the photo with a pink cast in the sky and red
smears in the water and beside the tiger: no holes, and no candy marks at all.
So it is the start at the photo, not the saturation,
that keeps these heads a colour grade. Our reading: the photo is already a low content loss, and the
cheapest style gain near it is a colour shift and fringes along edges; the linear head starts
near black, must rebuild the image, and builds it out of the painting's marks. Saturation
then adds the residual head's holes. This is one style, one seed, 500 steps at 128 px: a
diagnosis, not yet a recipe. The test at full size is `runs/s18/four_linear.sh` (four styles
from scratch, linear head, content ×2, 8,000 steps at 192 px, resumable).

![candy from scratch, 500 steps: residual (3 runs) then linear head (3 runs) on 4 held-out photos (columns labelled with the run files)](sheet_heads_s18.jpg)

![the same photos: residual, linear, linear content ×2, additive, additive content ×2 (columns labelled with the run files)](sheet_heads_add_s19.jpg)

**`four_styles_bin` from scratch with the linear head (session 19; not shipped yet).** The
full-size test: the four styles from scratch, linear head, content weight 2, the shipped
model's other settings (style 5 at scales 1 and 2, relu3_1 content, no TV), 192 px, batch 4,
bf16, 2 threads, on the 501 training photos only (`runs/s18/four_linear.sh`, resumed exactly
across two sessions), stopped cleanly at 6,000 of its 8,000 steps (1,500 per style; about
2 h 38 min of training) to be scored here. The same 8 held-out photos × 4 styles at 384 px,
beside the shipped model:

{_table(f['four19'])}

{_paired_lines(f['four19'], SHIPPED, FOUR19)}

No holes in any cell, and none in its previews from step 250 to 6,000. Against the shipped
model it trades style for content: C falls to {_mean(f['four19'], FOUR19, 'C'):.2f} (under the
target) while S falls to {_mean(f['four19'], FOUR19, 'S'):.3f} (mosaic
{_cell(f['four19'], FOUR19, 'mosaic'):.2f}, the great wave
{_cell(f['four19'], FOUR19, 'the_great_wave'):.2f}: under it). In the pictures (the sheet
below, the portrait's cells at 100 %): away from faces the two models paint much the same
marks (candy's red and yellow bands over the sailboat's water, rain_princess's blue and
orange dabs, the great wave's teal and navy line work); on the face the shipped model paints
over it (candy a blue-grey face, mosaic lead lines across the cheeks, the great wave dark
contours) and the new one keeps a natural face with the painting in the hair and the
background; its mosaic is paler, with fewer lead lines. Both show a faint vertical streak
texture on the face in rain_princess at 100 %; at 200 % the new model's mosaic and
rain_princess lay a fine diamond / checker texture (4–6 px) over the sailboat's water, a grid
that is not the painting's. Neither meets both targets, and this one is
not shipped: its training style loss has nearly flattened (mean 1.40 over steps 4,001–4,500,
1.35 over 5,501–6,000), so its last 2,000 steps would hardly lift S to 0.90; the next try
weighs content less (between 1 and 2) or mosaic's style more, from scratch or from this
checkpoint. It is the clean base the new-style and strokes reports need (the shipped model
descends from models that saw the held-out photos).

![shipped four_styles_bin then the session-19 model, per style, on the portrait and the sailboat (columns labelled with the files scored)](sheet_four_s19.jpg)

**WCT + a few optimiser iterations (`--refine`, session 16).** The one-pass WCT result puts the
painting's palette and texture in place; `stylize run --style-image P --refine N` (the UI's
Refine slider, the score method `wct:refine=N`) then runs N L-BFGS iterations of the
optimiser's objective (content at relu3_1, the painting's Gram matrices at scales 1 and 2,
`stylize.optimize`) from that result, at the processed size. The first 2 held-out photos
× the 6 paintings at 384 px (20 iterations: 30 cost about 3 minutes a cell here), one-pass WCT
again in the same run for the time ratio:

{_table(f['refine'])}

{_paired_lines(f['refine'], 'wct', REFINE)}

Twenty iterations halve the content drift and keep the style strength (its change is inside
the noise): the one pass
leaves the photo's content to the decoders, which blur and scramble it where the painting is
busy, and the optimiser's content term puts it back while its Gram term keeps the painting's
marks. In the pictures (the sheet below; 100 % crops of the portrait looked at): mosaic's face
comes back clean, with the painting's lead-line network over the hair and the background
instead of one-pass mush; la_muse keeps its flat green, red and blue fields and black outlines
with the face readable; the_scream's orange strokes stay, the skin smoother. The cost is the
optimiser's: {_mean(f['refine'], REFINE, 'seconds'):.0f} s per 384 px image here against
{_mean(f['refine'], 'wct', 'seconds'):.1f} s for the one pass, measured in the same run while two
training jobs shared the 2-core CPU (so both are inflated, the ratio less so). Mosaic stays
below S 0.90 ({_cell(f['refine'], REFINE, 'mosaic'):.2f}). This is 2 photos per painting (n = 12
pairs), a check, not a survey: the first two held-out photos only.

![WCT and WCT + 20 iterations: photos × (painting, method)](sheet_refine.jpg)

## Commands

    S=../shared/data/styles
    normlab --device cpu stylize score --methods model:four_styles_bin,wct,adain \\
      --styles $S/candy.jpg,$S/mosaic.jpg,$S/the_great_wave.jpg,$S/the_scream.jpg,$S/la_muse.jpg,$S/woman_with_hat.jpg \\
      --photos ../shared/data/content --split heldout --limit 4 --sheet-photos 4 \\
      -o forward.json --sheet sheet_forward.jpg
    # optimize: the same with --methods optimize, 3 paintings, --limit 2, iterations 80,40,20
    #   (score's method options: {{"optimize": {{"iterations": "80,40,20"}}}})
    # recipe: normlab --device cpu stylize train --style-image $S/candy.jpg --content ../shared/data/content \\
    #   --norm bin --image-size 128 --batch-size 4 --steps 300 --loss absolute|relative --seed 0 \\
    #   --vgg-weights ../shared/weights/vgg19_normalised_relu3_1.pth --out runs/ab/LOSS
    # retrain: the command in weights/manifest.json (four_styles_bin), then
    # normlab --device cpu stylize score --methods model:OLD.safetensors,model:NEW.safetensors \\
    #   --styles $S/candy.jpg,$S/mosaic.jpg,$S/rain_princess.jpg,$S/the_great_wave.jpg \\
    #   --photos ../shared/data/content --split heldout --limit 8 --sheet-photos 4 -o retrain.json
    # TV follow-up: runs/s15 in the notes; the same score over the shipped model and the two
    #   run files -o retrain_s15.json; crops: experiments.reproduce.style_quality.crop_figure(
    #   [(label, model file), ...], adain_avril.jpg, [the 4 styles], "crops_tv.jpg")
    # candy_bin before/after: stylize score --methods model:candy_bin,model:runs/s15/candy_bin/model.safetensors
    #   --styles $S/candy.jpg --split heldout --limit 8 (then the methods renamed: candy_s16.json)
    # session 17 try: runs/s17/four.sh, then stylize score --methods model:four_styles_bin,
    #   model:runs/s17/four_styles_bin/model.safetensors --styles (the 4 styles) --limit 8
    #   (then the methods renamed: four_s17.json; sheet: its first 2 photo rows)
    # output heads (session 18): normlab --device cpu stylize train --style-image $S/candy.jpg \\
    #   --content ../shared/data/content --norm bin --image-size 128 --batch-size 4 --steps 500 \\
    #   --seed 42 --style-size 384 --amp --loss relative --vgg-weights (as above) --out runs/NAME \\
    #   [--output linear] [--content-layer relu2_1] [--norm bn] [--content-weight 2], then
    #   stylize score --methods model:runs/NAME/model.safetensors,... --styles $S/candy.jpg
    #   --limit 8 (then the methods renamed: heads_s18.json); session 19: the same with
    #   --output additive [--content-weight 2], scored beside three of them (heads_add_s19.json)
    # session 19, four styles from scratch: runs/s18/four_linear.sh (stylize train --style-image
    #   (the 4 styles) --norm bin --output linear --content-weight 2 --image-size 192 --batch-size 4
    #   --style-size 384 --seed 42 --amp --loss relative), then stylize score --methods
    #   model:four_styles_bin,model:RUN/model.safetensors --styles (the 4 styles) --limit 8
    #   (then the methods renamed: four_s19.json; sheet: its first 2 photo rows)
    # refine: stylize score --methods wct,wct:refine=20 --styles (the 6 paintings) --limit 2
    #   --sheet-photos 2 -o refine.json --sheet sheet_refine.jpg
    python -m experiments.reproduce.style_quality reports/style-quality   # this README

The decoders: `weights/manifest.json` (held-out reconstruction PSNR relu3_1 25.1 dB, relu2_1
30.3 dB (24.4 dB at the step-350 export scored in the tables above it replaced), relu1_1
44.8 dB; commands there).
"""


def painting_grid(out: str | Path, photos: list[str] | None = None,
                  paintings: list[str] | None = None, size: int = 512, cell: int = 300,
                  refine: int = 0, vgg_weights: str | None = None) -> Path:
    """docs/stylize_any_painting.jpg: a header row of paintings, then each photo and its WCT
    results (``stylize run --style-image`` defaults: one pass at ``size`` px), ``cell`` px wide."""
    from PIL import Image

    from stylize.arbitrary import load_stylizer, stylize_with_paintings
    from stylize.losses import find_encoder

    from .budgets import shared_root

    styles = shared_root() / "data" / "styles"
    paintings = paintings or [str(styles / f"{n}.jpg") for n in
                              ("the_scream", "la_muse", "woman_with_hat", "starry_night")]
    samples = Path(__file__).resolve().parents[2] / "weights" / "samples"
    photos = photos or [str(samples / f"{n}.jpg") for n in ("golden_gate", "tubingen", "amber")]
    st = load_stylizer(find_encoder(vgg_weights))

    def fit(im):
        return im.resize((cell, round(im.size[1] * cell / im.size[0])), Image.LANCZOS)

    rows = [[None] + [fit(Image.open(p).convert("RGB")) for p in paintings]]
    for ph in photos:
        src = Image.open(ph).convert("RGB")
        rows.append([fit(src)] + [fit(stylize_with_paintings(st, src, {p: 1.0}, max_size=size,
                                                             refine=refine))
                                  for p in paintings])
    hs = [max(im.size[1] for im in r if im is not None) for r in rows]
    sheet = Image.new("RGB", (cell * (len(paintings) + 1), sum(hs) + 10 * len(hs)), "white")
    y = 0
    for r, h in zip(rows, hs):
        for i, im in enumerate(r):
            if im is not None:
                sheet.paste(im, (i * cell, y + (h - im.size[1]) // 2))
        y += h + 10
    sheet.save(out, quality=90)
    return Path(out)


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "reports/style-quality")
    text = render(folder)
    from engine.io import write_text_atomic

    write_text_atomic(folder / "README.md", text)
    print(folder / "README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
