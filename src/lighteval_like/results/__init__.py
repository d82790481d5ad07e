"""Results: the run record, its file layout (one module for the writer and every reader), the
writer, run loading, compare, the HTML report and TensorBoard."""
