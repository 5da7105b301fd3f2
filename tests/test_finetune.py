import torch

from dpal.models import build_model
from dpal.training.evaluate import accuracy
from dpal.training.finetune import FinetuneConfig, finetune
from tests.conftest import make_images


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_finetune_learns_and_leaves_the_original_alone():
    torch.manual_seed(0)
    model = build_model("cnn-tanh", (1, 28, 28), 10)
    before = _params(model).clone()
    data, test = make_images(200, seed=0), make_images(200, seed=1)
    tuned = finetune(model, data, FinetuneConfig(epochs=10, batch_size=32, lr=0.1))
    assert torch.equal(_params(model), before)
    assert accuracy(tuned, test) > 0.8 > accuracy(model, test)


def test_distillation_pulls_towards_the_teacher():
    torch.manual_seed(0)
    teacher = build_model("cnn-tanh", (1, 28, 28), 10)
    data, pool = make_images(50, seed=0), make_images(300, seed=2)
    x, _ = pool.tensors()

    def disagreement(m):  # KL(teacher ‖ m) on the pool
        with torch.no_grad():
            t = torch.log_softmax(teacher(x), 1)
            return (t.exp() * (t - torch.log_softmax(m(x), 1))).sum(1).mean().item()

    cfg = FinetuneConfig(epochs=10, batch_size=16, lr=0.1)
    plain = finetune(teacher, data, cfg)
    distilled = finetune(
        teacher,
        data,
        FinetuneConfig(epochs=10, batch_size=16, lr=0.1, distill_weight=5.0),
        unlabelled=pool,
    )
    assert disagreement(distilled) < disagreement(plain)
