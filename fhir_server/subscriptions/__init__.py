"""Care-circle notifications: FHIR Subscriptions (R4 criteria and the R5 Backport IG's topics),
admitted on the write path (rules.py), dispatched from the history's pending events
(dispatcher.py) to rest-hook endpoints, signed (signing.py), under the subscriber's access."""
