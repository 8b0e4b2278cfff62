"""Small prototxt nets written in the tests: a net around a body, stored blobs, one layer."""

import torch

from automtl.compiler.prototxt import load_prototxt


def net(body, shape=(1, 3, 8, 8), **kwargs):
    """The net of ``body`` (layer text) reading a declared input ``data`` of ``shape``, in eval mode."""
    head = 'name: "t"\ninput: "data"\ninput_shape { ' + " ".join(f"dim: {d}" for d in shape) + " }\n"
    gm = load_prototxt(head + body, **kwargs)
    gm.eval()
    return gm


def blob(values, shape):
    """A ``blobs { }`` entry holding ``values`` with a V2 ``shape``."""
    values = torch.as_tensor(values, dtype=torch.float32).flatten().tolist()
    return "blobs { shape { " + " ".join(f"dim: {d}" for d in shape) + " } " + " ".join(f"data: {v!r}" for v in values) + " }"


def layer(name, type_, bottoms, tops, body=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}\n'
