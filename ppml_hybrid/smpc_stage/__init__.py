"""SMPC stage: blocks 1..split under CrypTen secret sharing, one OS process per party.

Public API (what the hybrid pipeline calls):

* :func:`launcher.run_parties` — start parties + dealer on this machine, run a party program,
  tear everything down; errors name the failing party (exit code 6);
* :func:`party.run_party` / :func:`party.run_dealer` — one role per host (rendezvous config);
* :class:`stage.MPCBlocks` — ``build(model=, state_dict=, image_size=, stop=)``, ``forward``,
  ``backward``: per-layer activations, deltas and weight gradients as shares;
* :class:`programs.StageStep` — a ready forward+backward program (tests, benchmark);
* :func:`cost_model.project_step` — step time on a network profile from measured traffic.

Modules import CrypTen only through :mod:`crypten_compat`.
"""
