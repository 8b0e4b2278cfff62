"""Small prototxt nets written in the tests: a net around a body, stored blobs, one layer."""

import torch

from automtl.compiler.prototxt import load_prototxt


def net(body, shape=(1, 3, 8, 8), **kwargs):
    """The net of ``body`` (layer text) reading a declared input ``data`` of ``shape``, in eval mode."""
    head = 'name: "t"\ninput: "data"\ninput_shape { ' + " ".join(f"dim: {d}" for d in shape) + " }\n"
    gm = load_prototxt(head + body, **kwargs)
    gm.eval()
    return gm


def assert_scripts_and_exports(gm, x, **export_options):
    """``gm`` scripted with TorchScript and exported to ONNX (run in onnxruntime) gives its own
    outputs on ``x``: one tensor or a tuple of them."""
    import io
    import warnings

    import onnxruntime

    expected = gm(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(gm)
        buffer = io.BytesIO()
        torch.onnx.export(gm, (x,), buffer, dynamo=False, **export_options)
    got = scripted(x)
    assert all(torch.allclose(a, b) for a, b in zip(got if isinstance(got, tuple) else (got,), expected, strict=True))
    session = onnxruntime.InferenceSession(buffer.getvalue())
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert all(torch.allclose(torch.from_numpy(a), b, atol=1e-5) for a, b in zip(got, expected, strict=True))


def blob(values, shape):
    """A ``blobs { }`` entry holding ``values`` with a V2 ``shape``."""
    values = torch.as_tensor(values, dtype=torch.float32).flatten().tolist()
    return "blobs { shape { " + " ".join(f"dim: {d}" for d in shape) + " } " + " ".join(f"data: {v!r}" for v in values) + " }"


def layer(name, type_, bottoms, tops, body=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}\n'
