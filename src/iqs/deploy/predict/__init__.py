"""`iqs predict`: score folders of photos with an exported ONNX and write pick labels, stars and bursts."""
