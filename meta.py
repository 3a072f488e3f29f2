import onnx, glob, sys
for f in sorted(glob.glob(sys.argv[1])):
    m = onnx.load(f)
    try:
        onnx.checker.check_model(m, full_check=True); ck="ok"
    except Exception as e: ck="FAIL "+str(e)[:200]
    io = lambda vs: [(v.name, onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type), [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in vs]
    print(f, "ir", m.ir_version, "opset", [(o.domain, o.version) for o in m.opset_import], ck)
    print("  in", io(m.graph.input), "out", io(m.graph.output))
    print("  meta", {p.key: p.value[:80] for p in m.metadata_props})
