"""``normlab stylize optimize`` and ``stylize train-decoder``: any painting, no per-style model.

Registered on the ``stylize`` sub-app (``cli.stylize``); thin wrappers over ``stylize.optimize``
and ``stylize.decoder``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from engine import config as C
from stylize.config import DecoderTrainConfig

from .config_options import GIVEN, Given, config_options


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ValueError(f"{what} must be whole numbers separated by commas, got {text[:80]!r}") from None


def register(app: typer.Typer, device_of) -> None:
    """Add the commands to ``app``; ``device_of(ctx, device)`` resolves the global --device."""

    @app.command("optimize")
    def optimize_cmd(
        ctx: typer.Context,
        photo: Path = typer.Argument(..., help="The photo to stylize."),
        style_image: str = typer.Option(..., "--style-image", "-s", help="Any painting, or a "
                                        "blend a.jpg:0.7,b.jpg:0.3 (Gram matrices mixed)."),
        output: Path = typer.Option(..., "--output", "-o", help="Output image (.jpg, .png)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
        size: int = typer.Option(512, help="Longest side of the output in px (the result is "
                                 "this size, not the photo's)."),
        scales: str = typer.Option("4,2,1", help="Coarse-to-fine factors: 4,2,1 optimises at "
                                   "1/4, then 1/2, then full size."),
        iterations: str = typer.Option("150,80,40", help="Iterations per scale (one number: the "
                                       "same at every scale)."),
        optimizer: str = typer.Option("lbfgs", help="lbfgs (Gatys et al.) or adam."),
        lr: float = typer.Option(4.0, help="Adam step in 0–255 pixel units (lbfgs ignores it)."),
        content_weight: float = typer.Option(1.0, help="Content term weight (relative feature error at relu3_1)."),
        style_weight: float = typer.Option(5.0, help="Style term weight (relative Gram error); larger = more painting."),
        tv_weight: float = typer.Option(0.0, help="Total-variation weight (smoothness)."),
        style_scales: str = typer.Option("1,2", help="Gram matrices also matched at these "
                                         "downsamplings (larger shapes from a shallow encoder)."),
        style_size: Optional[int] = typer.Option(None, help="Longest side of the painting at full "
                                                 "scale (default: the output's)."),
        preserve_color: bool = typer.Option(False, help="Keep the photo's colours; transfer luminance only."),
        vgg_weights: Optional[str] = typer.Option(None, help="Loss network weights (default: "
                                                  "vgg19_normalised_relu3_1.pth found in "
                                                  "$NORMLAB_VGG_WEIGHTS, ~/.cache/normlab/weights)."),
        seed: int = typer.Option(0, help="Random seed."),
        device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the global --device)."),
    ) -> None:
        """Slow but best: optimise the image itself (Gatys et al. 2016), coarse to fine, with a
        tqdm bar; Ctrl-C stops and keeps nothing half-written."""
        from tqdm.auto import tqdm

        from engine.devices import resolve_device
        from engine.images import load_image, to_image, to_tensor
        from stylize.arbitrary import load_paintings, parse_paintings
        from stylize.infer import finish_output
        from stylize.losses import find_encoder
        from stylize.optimize import OptimizeConfig, optimize

        from .stylize import _save, plan_outputs

        cfg = OptimizeConfig(size=size, scales=_ints(scales, "--scales"),
                             iterations=_ints(iterations, "--iterations"), optimizer=optimizer,
                             lr=lr, content_weight=content_weight, style_weight=style_weight,
                             tv_weight=tv_weight, style_scales=_ints(style_scales, "--style-scales"),
                             style_size=style_size, seed=seed)
        cfg.validate()
        paintings = parse_paintings(style_image)
        if photo.is_dir():
            raise ValueError(f"{photo} is a folder: stylize optimize takes one photo")
        (job,), _ = plan_outputs([photo], output, overwrite, others=list(paintings))
        dev = resolve_device(device_of(ctx, device))
        encoder = find_encoder(vgg_weights).to(dev)
        src = load_image(photo).convert("RGB")
        styles, weights = load_paintings(paintings, style_size or size)
        bar = tqdm(total=sum(cfg.iterations), desc="optimize", unit="it")

        def progress(done: int, total: int, terms: dict) -> None:
            bar.update(done - bar.n)
            bar.set_postfix(content=f"{terms.get('content', 0):.3g}", style=f"{terms.get('style', 0):.3g}")

        try:
            res = optimize(to_tensor(src).to(dev), [s.to(dev) for s in styles], encoder, cfg,
                           weights=weights, progress=progress)
        finally:
            bar.close()
        img = to_image(res.image.cpu())
        if preserve_color:
            img = finish_output(src.resize(img.size, resample=3), img, True)
        _save(img, job[1])
        typer.echo(f"{job[1]}  ({res.iterations} iterations, {res.seconds:.0f} s; content "
                   f"{res.losses.get('content', 0):.3g}, style {res.losses.get('style', 0):.3g})")

    @app.command("train-decoder")
    @config_options(DecoderTrainConfig, skip={"device"},
                    decls={"content_dir": ("--content",), "overwrite": ("--overwrite",)})
    def train_decoder_cmd(
        ctx: typer.Context,
        device: Optional[str] = typer.Option(
            None, help=C.help_text(C.field(DecoderTrainConfig, "device"))),
        given: Given = GIVEN,
    ) -> None:
        """Train a decoder that inverts the VGG encoder at one level (pixel + feature
        reconstruction, no style data): the arbitrary-style path (`stylize run --style-image`).
        Every option is a field of stylize.config.DecoderTrainConfig."""
        import weights as shipped
        from stylize.decoder import train_decoder

        values = dict(given.values)
        if values.get("vgg_weights") is None:
            found = shipped.find_encoder_file()
            values["vgg_weights"] = str(found) if found else None
        values["device"] = device_of(ctx, given.pick("device", device))
        path = train_decoder(DecoderTrainConfig(**values), explicit=given.explicit)
        typer.echo(str(path))
