"""normlab.stylize — Johnson et al. (2016) feed-forward style transfer with any normalization layer
(BN, IN, BN+IN, BIN, IBN, ...): train, run, compare, benchmark."""
from engine.images import load_image, save_image
from .infer import StyleModel, compare_grid, list_models, load_model, stylize_image
from .losses import PerceptualLoss, load_vgg_encoder
from .model import StyleConfig, TransformerNet, load_examples_pth
from .train import TrainConfig, train

__all__ = ["TransformerNet", "StyleConfig", "StyleModel", "load_examples_pth", "load_model",
           "list_models", "stylize_image", "compare_grid", "load_image", "save_image",
           "TrainConfig", "train", "PerceptualLoss", "load_vgg_encoder"]
