"""Deployment: ONNX export in digiKam's contract, folder prediction and XMP pick labels."""
