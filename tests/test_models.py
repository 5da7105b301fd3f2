import pytest
import torch
from torch import nn

from dpal.core.errors import DpalError
from dpal.models import TFPrivacyCNN, build_model, embeddings, logits_and_embeddings


def test_tf_privacy_cnn_has_26010_parameters_on_mnist():
    model = TFPrivacyCNN((1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) == 26_010
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_colour_variant_and_activations():
    model = build_model("cnn-relu", (3, 32, 32), 10)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(m, nn.ReLU) for m in model.modules())
    assert any(isinstance(m, nn.Tanh) for m in build_model("cnn-tanh", (1, 28, 28), 10).modules())
    with pytest.raises(DpalError, match="unknown model"):
        build_model("resnet9000", (1, 28, 28), 10)


def test_embeddings_are_the_input_of_the_last_linear_layer():
    torch.manual_seed(0)
    model = TFPrivacyCNN((1, 28, 28), 10)
    x = torch.randn(5, 1, 28, 28)
    emb = embeddings(model, x)
    assert emb.shape == (5, 32)
    torch.testing.assert_close(model.classifier(emb), model(x))
    logits, emb_one_pass = logits_and_embeddings(model, x, batch_size=2)
    torch.testing.assert_close(emb_one_pass, emb)
    torch.testing.assert_close(logits, model(x))

    class Plain(nn.Module):  # no embed(): found through the last nn.Linear
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 7), nn.Tanh())
            self.head = nn.Linear(7, 3)

        def forward(self, x):
            return self.head(self.body(x))

    plain = Plain()
    got = embeddings(plain, x, batch_size=2)
    torch.testing.assert_close(got, plain.body(x))
