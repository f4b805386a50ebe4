"""Stage 5: handlers and the retry queue.  router.py finds handlers and routes addresses,
runner.py runs one handler, deliver.py runs a message's pending handlers once its checks
are done, queue.py moves it afterwards and retries what was deferred, duplicates.py recognises a
message a handler has already handled."""
