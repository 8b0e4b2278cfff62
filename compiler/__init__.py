"""The MTS-compiler: front ends that turn a backbone into the VCN graph (IR), and its passes.

Importable only as ``automtl.compiler``.
"""
