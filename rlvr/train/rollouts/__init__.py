"""How RL's rollouts reach its trainer: a producer of batches (producer.py) and the
queues that join it to the trainer, in its thread, in a background thread (queues.py)
or on Ray actors (ray_queue.py). `rlvr.train.rl` builds one; nothing else here knows
which runs."""
