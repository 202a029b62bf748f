"""A process kubelet for the test control plane: pods on its node run as local processes.

See docs/contributing-cluster.md ("Pods that run for real"). Modules: api (asyncio client and
reflector), netblock (loopback addresses), podspec (image swap, env), probes, status, container
(one process), pod (one pod), services (DNS and Service proxies), node (Node and Lease), main.
"""
