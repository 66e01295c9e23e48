"""Scale-out: rollouts on Ray workers (:mod:`.rollout`) and a data-parallel learner on
torch.distributed (:mod:`.learner`), optionally with AdamW's state sharded (:mod:`.zero`) or
the weights too (:mod:`.fsdp`).

Both are optional and off by default. A plain ``rolekit train`` imports neither Ray nor
starts a process group: single-process mode stays plain Python, debuggable with a
breakpoint. Ray comes with the ``distributed`` extra (``pip install 'rolekit[distributed]'``).
"""
