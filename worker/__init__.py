"""The Sluice worker: claims ready jobs, runs their handlers, records outcomes.

Handler code imports its API from the root package::

    from sluice import JobContext, NonRetryableError, task
"""
