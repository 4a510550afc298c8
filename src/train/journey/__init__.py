"""Training glue of the journey task: its LightningModule, task object, plots and ``journey.onnx`` export."""
