"""What labels mean: a model's output channels (``heads``), painted annotations, instance labels from
object masks, and the scores of labels against the truth (``metrics``)."""
