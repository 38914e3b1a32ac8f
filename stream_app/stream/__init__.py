"""The stream shell: the Faust app and batch handler, the ordered reader of the input topics, the producer,
topic administration and the control topics (models, catalogue), over the pure core."""
