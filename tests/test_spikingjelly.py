"""Cross-check against SpikingJelly 2.0's own QIF (`qif_multi_step`, its registered CUDA/Triton
implementation) on the GPU: the semantics this library promises. Needs torch and SpikingJelly
(scripts/gpu_check.sh installs the wheels from _carry/wheels); skipped elsewhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxqif
from helpers import assert_close, make_inputs

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
sj_functional = pytest.importorskip("spikingjelly.activation_based.functional")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")

NAMES = ("Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike", "Erf")


@pytest.mark.parametrize("detach_reset", [False, True], ids=["", "detach"])
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_spikingjelly(name, v_reset, detach_reset):
    if not torch.cuda.is_available():
        pytest.skip("torch sees no GPU")
    ours = getattr(jaxqif.surrogate, name)()
    theirs = getattr(sj_surrogate, name)(alpha=ours.alpha)
    x, v = make_inputs((16, 64, 33), 0, jnp.float32, seed=9)
    g = jax.random.normal(jax.random.key(10), x.shape, jnp.float32)
    params = dict(v_reset=v_reset, detach_reset=detach_reset)

    def loss(x, v):
        spikes, v_final, v_seq = jaxqif.qif_multistep(
            x, v, surrogate=ours, store_v_seq=True, backend="ffi", **params)
        return jnp.sum(spikes * g) + jnp.sum(v_seq * g) + jnp.sum(v_final), (spikes, v_final)

    gpu = jax.devices("gpu")[0]
    (gx, gv), (spikes, v_final) = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(
        *jax.device_put((x, v), gpu))

    tx = torch.tensor(np.asarray(x), device="cuda", requires_grad=True)
    tv = torch.tensor(np.asarray(v), device="cuda", requires_grad=True)
    tg = torch.tensor(np.asarray(g), device="cuda")
    t_spikes, t_v_final, t_v_seq = sj_functional.qif_multi_step(
        tx, tv, tau=2.0, v_threshold=1.0, v_reset=v_reset, v_rest=0.0, v_c=0.8, a0=1.0,
        detach_reset=detach_reset, surrogate_function=theirs, store_v_seq=True)
    ((t_spikes * tg).sum() + (t_v_seq * tg).sum() + t_v_final.sum()).backward()

    np.testing.assert_array_equal(np.asarray(spikes), t_spikes.detach().cpu().numpy())
    assert_close(v_final, t_v_final.detach().cpu().numpy(), 1e-5, "v_final")
    assert_close(gx, tx.grad.cpu().numpy(), 1e-4, "grad x_seq")
    assert_close(gv, tv.grad.cpu().numpy(), 1e-4, "grad v_init")
