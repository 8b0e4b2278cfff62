"""The prototxt schema: the checked-in generated module matches proto/automtl.proto, and the
schema keeps Caffe's field names, numbers and types, so that real Caffe files parse."""

import os
import subprocess
import sys

from google.protobuf import descriptor_pb2

from prototxt_corpus import caffe_proto

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")
# Caffe's schema, carried in tests/corpus (BSD-2, see SOURCES there); $AUTOMTL_CAFFE_PROTO names another
CAFFE_PROTO = caffe_proto()
REGENERATE = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}"]
#: messages of Caffe forks' layers (not in BVLC's caffe.proto; see proto/automtl.proto)
FORK_MESSAGES = {
    "InterpParameter", "BNParameter", "UpsampleParameter", "PermuteParameter", "NormalizeParameter",
    "ShuffleChannelParameter", "DenseImageDataParameter",
}


def test_checked_in_pb2_is_what_protoc_generates(tmp_path):
    subprocess.run(REGENERATE + [f"--python_out={tmp_path}", os.path.join(PROTO_DIR, "automtl.proto")], check=True)
    generated = (tmp_path / "automtl_pb2.py").read_bytes()
    checked_in = open(os.path.join(PROTO_DIR, "automtl_pb2.py"), "rb").read()
    assert generated == checked_in, (
        "proto/automtl_pb2.py is stale; regenerate it: python -m grpc_tools.protoc -Iproto "
        "--python_out=proto proto/automtl.proto"
    )


def test_regeneration_command_is_written_down():
    proto = open(os.path.join(PROTO_DIR, "automtl.proto"), encoding="utf-8").read()
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    command = "python -m grpc_tools.protoc -Iproto --python_out=proto proto/automtl.proto"
    assert command in proto and command in readme


def _messages(path, tmp_path, include):
    out = tmp_path / (os.path.basename(path) + ".pb")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{include}", f"--descriptor_set_out={out}", path], check=True
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    found = {}

    def walk(message, prefix):
        name = prefix + message.name
        found[name] = {
            f.name: (f.number, f.label, f.type, f.type_name.rsplit(".", 1)[-1], f.default_value) for f in message.field
        }
        for enum in message.enum_type:
            found[name + "." + enum.name] = {v.name: v.number for v in enum.value}
        for nested in message.nested_type:
            walk(nested, name + ".")

    for message in files.file[0].message_type:
        walk(message, "")
    for enum in files.file[0].enum_type:
        found[enum.name] = {v.name: v.number for v in enum.value}
    return found


def test_schema_keeps_caffes_fields(tmp_path):
    assert os.path.exists(CAFFE_PROTO), f"Caffe's caffe.proto is missing ({CAFFE_PROTO}; tests/corpus carries it, AUTOMTL_CAFFE_PROTO names another)"
    ours = _messages(os.path.join(PROTO_DIR, "automtl.proto"), tmp_path, PROTO_DIR)
    caffe = _messages(CAFFE_PROTO, tmp_path, os.path.dirname(CAFFE_PROTO))
    needed = [
        "NetParameter", "LayerParameter", "V1LayerParameter", "BlobShape", "BlobProto", "FillerParameter",
        "NetState", "NetStateRule", "ParamSpec", "ConvolutionParameter", "PoolingParameter",
        "BatchNormParameter", "ScaleParameter", "EltwiseParameter", "InnerProductParameter",
        "ConcatParameter", "SliceParameter", "CropParameter", "ReshapeParameter", "LRNParameter",
        "InputParameter", "DataParameter", "TransformationParameter", "PReLUParameter", "ELUParameter",
        "ReLUParameter", "DropoutParameter", "PowerParameter", "FlattenParameter", "SoftmaxParameter",
        "BiasParameter", "ClipParameter", "V1LayerParameter.LayerType", "PoolingParameter.RoundMode", "Phase",
    ]
    for name in needed:
        assert name in ours, name
    for name, fields in ours.items():
        assert name in caffe or name.split(".")[0] in FORK_MESSAGES, f"{name} is not a Caffe message"
        if name not in caffe:
            continue
        for field, spec in fields.items():
            if field in caffe[name]:
                assert spec == caffe[name][field], f"{name}.{field}: ours {spec}, Caffe's {caffe[name][field]}"
            else:  # our extensions live outside Caffe's field numbers
                assert spec[0] >= 1000, f"{name}.{field} is not in caffe.proto and not numbered as an extension"
    # every field of the messages a net file is made of is there (V0's `layer` aside)
    for name in ("NetParameter", "LayerParameter", "ConvolutionParameter", "PoolingParameter", "BatchNormParameter"):
        assert set(caffe[name]) <= set(ours[name]), f"{name} misses {set(caffe[name]) - set(ours[name])}"
    assert set(caffe["V1LayerParameter"]) <= set(ours["V1LayerParameter"])  # V0's `layer` included
    assert ours["V0LayerParameter"] == caffe["V0LayerParameter"]
    # the forks' layer parameters hang off LayerParameter under the forks' own names
    fork_fields = {f: spec[3] for f, spec in ours["LayerParameter"].items() if spec[3] in FORK_MESSAGES}
    assert fork_fields == {
        "interp_param": "InterpParameter", "bn_param": "BNParameter", "upsample_param": "UpsampleParameter",
        "permute_param": "PermuteParameter", "norm_param": "NormalizeParameter",
        "shuffle_channel_param": "ShuffleChannelParameter", "dense_image_data_param": "DenseImageDataParameter",
    }
