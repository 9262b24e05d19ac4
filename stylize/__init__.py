"""normlab.stylize — Johnson et al. feed-forward style transfer with any normalization layer."""
from .images import load_image
from .losses import PerceptualLoss, load_vgg_encoder
from .model import StyleConfig, TransformerNet, load_examples_pth
from .train import TrainConfig, train

__all__ = ["TransformerNet", "StyleConfig", "load_examples_pth", "load_image", "TrainConfig",
           "train", "PerceptualLoss", "load_vgg_encoder"]
