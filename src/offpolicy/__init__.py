"""Off-policy evaluation: estimators, bootstrap intervals, the synthetic-shop simulator (never imports torch).

What a policy that never ran would have earned, estimated from another policy's logged impressions
and feedback; torch-free, so a serving host and an analyst's laptop can both run it.
"""
