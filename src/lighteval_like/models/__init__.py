"""Model backends. All share `LanguageModel`: loglikelihood, loglikelihood_rolling, greedy_until."""
