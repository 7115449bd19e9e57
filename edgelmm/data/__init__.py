"""Data: the EdgeScenes synthetic world and the LLaVA-format data set and collator."""
