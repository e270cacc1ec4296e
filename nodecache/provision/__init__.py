"""The thin provisioning shim: a running VM from a staged image in constant time.

What a cloud controller (or an operator with ``vmprov``) calls on a node. The node
daemon owns it, so that one process keeps the records, the references on bases and the
time-to-live reaper:

- :mod:`.request`: what a VM asks for, validated (pure);
- :mod:`.disks`: the VM's copy-on-write disk: a qcow2 overlay on the base file, or an
  LVM snapshot of the base volume; never a copy;
- :mod:`.context`: the contextualization ISO (cloud-init NoCloud ``cidata`` and HEPiX
  ``context.sh``/``prolog.sh``), built with pycdlib;
- :mod:`.domain`: the libvirt domain XML (pure);
- :mod:`.hypervisors`: libvirt, or qemu-system started directly (QMP in :mod:`.qmp`);
- :mod:`.provisioner`: create/stop/destroy/list/rebase/reap, with every step undone
  if a later one fails;
- :mod:`.cli`: ``vmprov``, a client of the daemon's API.
"""
