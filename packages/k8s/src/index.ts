/** @wanas/k8s — Kubernetes manifests for a topology (`wanas k8s`): one Deployment, headless Service and PodDisruptionBudget per pod. */
export * from './manifests';
export * from './render';
