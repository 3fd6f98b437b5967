// Unstable plug-in points (custom index formats, credential providers). May change in any release.
export {};
