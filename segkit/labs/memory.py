"""Lab: plan a training step's GPU memory with sliders, and check the plan on this CPU.

Every number comes from ``segkit.planner`` (the same plan ``segkit plan`` prints and
``--batch-size auto`` chooses from); this module only lays out controls and draws. The planner
calibrates each model on the CPU the first time it is asked about it, from about a second (U-Net)
to minutes (DeepLabV3+ ResNet-101 in 16 bits); the caption says so while it runs, and the
calibration is kept on disk (``planner.cache_dir()``), so the lab opens in seconds afterwards.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from segkit import planner, viz
from segkit.config import TrainConfig
from segkit.widgets import _Browser

#: Label -> (registry name, model options) of the models on offer.
MODELS = {
    "my_fcn": ("my_fcn", {}),
    "U-Net": ("unet", {}),
    "DeepLabV3+ MobileNetV3-Large": ("deeplabv3plus", {"backbone": "mobilenet_v3_large"}),
    "DeepLabV3+ ResNet-50": ("deeplabv3plus", {"backbone": "resnet50"}),
    "DeepLabV3+ ResNet-101": ("deeplabv3plus", {"backbone": "resnet101"}),
}
CROPS = ((256, 128), (512, 256), (1024, 512), (2048, 1024))  # (width, height)
AMP = {"fp32": "off", "fp16": "fp16", "bf16": "bf16"}  # precision -> TrainConfig.amp
#: The measured check: batch and (width, height), a size the calibration (128x64, 256x128) never ran.
CHECK_BATCH, CHECK_SIZE = 2, (320, 160)


class MemoryPlannerLab(_Browser):
    """Sliders for a training step -> its planned peak memory on a card, part by part.

    Controls: ``model`` (a label of ``MODELS``), ``batch``, ``crop`` ((width, height) of
    ``CROPS``), ``precision`` (fp32, fp16, bf16), ``checkpointing`` (activation checkpointing),
    ``gpu`` (the card's GiB; default 6, a GTX 1660 Ti) and the ``measure`` button (one real step on
    this CPU against its plan, in ``measured``). ``plan`` is the plan shown, ``largest`` the
    largest batch that fits (``planner.choose_batch_size``).
    """

    def __init__(self, *, model: str = "my_fcn", batch: int = 8, crop: tuple[int, int] = (512, 256),
                 precision: str = "fp32", checkpointing: bool = False,
                 gpu_gib: float = planner.DEFAULT_GPU_GIB):
        super().__init__()
        self.model = widgets.Dropdown(options=list(MODELS), value=model, description="model")
        self.batch = widgets.IntSlider(batch, min=1, max=64, description="batch", continuous_update=False)
        self.crop = widgets.Dropdown(options=[(f"{w}×{h}", (w, h)) for w, h in CROPS], value=tuple(crop),
                                     description="crop")
        self.precision = widgets.ToggleButtons(options=list(AMP), value=precision, description="precision")
        self.checkpointing = widgets.Checkbox(checkpointing, description="activation checkpointing")
        self.gpu = widgets.FloatSlider(gpu_gib, min=1, max=80, step=0.5, description="card GiB",
                                       continuous_update=False)
        self.measure_button = widgets.Button(description="measure on this CPU", icon="tachometer")
        self.measured = widgets.HTML()
        self.measure_button.on_click(lambda _button: self.measure())
        self.widget = widgets.VBox([
            widgets.HBox([self.model, self.crop, self.checkpointing]),
            widgets.HBox([self.batch, self.gpu]), self.precision, self.text, self.image,
            widgets.HBox([self.measure_button, self.measured])])
        self._rerender_on(self.model, self.batch, self.crop, self.precision, self.checkpointing, self.gpu)
        self.render()

    def config(self, **changes) -> TrainConfig:
        """The training config the controls describe (what ``segkit plan`` would be given)."""
        name, options = MODELS[self.model.value]
        if self.checkpointing.value:
            options = {**options, planner.checkpoint_option(name): True}
        return TrainConfig(model=name, model_options=options, size=self.crop.value,
                           batch_size=self.batch.value, amp=AMP[self.precision.value]).replace(**changes)

    def render(self) -> None:
        """Plan the step (calibrating first, with a caption, if this model is new), redraw."""
        config = self.config()
        if not planner.calibrated(config.model, precision=self.precision.value,
                                  checkpointing=self.checkpointing.value, options=config.model_options):
            self.text.value = (f"<i>calibrating {html.escape(self._setting())} on this CPU: from a "
                               "second to minutes, once per machine; kept in "
                               f"<code>{html.escape(str(planner.cache_dir()))}</code></i>")
        self.plan = planner.plan_config(config)
        self.largest = planner.choose_batch_size(config, self.gpu.value)
        self.image.value = viz.figure_png(viz.memory_bar(
            self.plan.breakdown(), gpu_gib=self.gpu.value, margin=planner.MARGIN,
            title=f"{self._setting()}, batch {config.batch_size}, {config.size[0]}×{config.size[1]}"))
        self.text.value = self._caption(config)

    def _setting(self) -> str:
        """``"U-Net fp16, checkpointing"``: what a calibration is made for."""
        return (f"{self.model.value} {self.precision.value}"
                f"{', checkpointing' if self.checkpointing.value else ''}")

    def _caption(self, config: TrainConfig) -> str:
        gpu, plan = self.gpu.value, self.plan
        usable = gpu * (1 - planner.MARGIN)
        verdict = "<b>fits</b>" if plan.fits(gpu) else "<b>does not fit</b>"
        if planner.plan_config(config.replace(batch_size=1)).fits(gpu):
            largest = f"largest batch that fits: {self.largest}"
        else:
            largest = "not even batch 1 fits: try 16 bits, checkpointing or a smaller crop"
        return (f"{verdict}: peak {plan.peak_gib:.2f} GiB against {usable:.2f} GiB usable of "
                f"{gpu:g} GiB ({planner.MARGIN:.0%} kept free) · {largest}")

    def measure(self) -> tuple[float, float]:
        """One real fp32 training step (batch ``CHECK_BATCH`` at ``CHECK_SIZE``) of the chosen model
        on this CPU against its plan; shown in ``measured``. Returns (measured, planned) MiB."""
        config = self.config(batch_size=CHECK_BATCH, size=CHECK_SIZE, amp="off")
        width, height = CHECK_SIZE
        self.measured.value = f"<i>measuring one step of batch {CHECK_BATCH} at {width}×{height}…</i>"
        measured = planner.measured_step_bytes(config.model, batch=CHECK_BATCH, size=CHECK_SIZE,
                                               checkpointing=self.checkpointing.value,
                                               options=config.model_options) / 2**20
        planned = planner.plan_config(config).tensor_gib * 1024
        self.measured.value = (
            f"batch {CHECK_BATCH} at {width}×{height}, fp32, on this CPU: measured "
            f"{measured:.0f} MiB, planned {planned:.0f} MiB ({100 * (planned / measured - 1):+.1f} %); "
            "torch's tensors only (the CUDA allowance is not on a CPU), at a size the calibration "
            "never ran")
        return measured, planned
