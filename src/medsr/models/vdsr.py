"""VDSR: a very deep plain CNN learning the residual over bicubic."""

from __future__ import annotations

from medsr.models.blocks import BicubicResidualNet
from medsr.models.registry import register_model


@register_model("vdsr")
class VDSR(BicubicResidualNet):
    """VDSR: 20 3×3 conv layers with 64 filters and ReLU, learning the residual over bicubic.

    Kim, Lee and Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional Networks",
    CVPR 2016.

    ``num_blocks`` is the number of conv layers (20 in the paper), ``num_features`` their width
    (64). Each layer is zero-padded so the size is kept, as in the paper. One network serves all
    scales in the paper (multi-scale training); here ``scale`` only sets the bicubic
    pre-upsampling done inside ``forward``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_features: int = 64,
        num_blocks: int = 20,
        scale: int = 2,
    ):
        super().__init__(in_channels, out_channels, num_features, num_blocks, scale)
