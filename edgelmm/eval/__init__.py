"""Evaluation: short-answer exact match per question type and POPE metrics."""
